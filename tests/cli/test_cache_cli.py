"""``tlstudio cache``: status and clear of the feature cache, without TensorFlow."""

from __future__ import annotations

import json

import numpy as np

from tlstudio import cli
from tlstudio.cli import common
from tlstudio.core.data.feature_cache import FeatureCache, FeatureSetKey


def _fill(tmp_path, count: int = 4) -> None:
    files = []
    for index in range(count):
        path = tmp_path / f"image_{index}.png"
        path.write_bytes(f"pixels {index}".encode())
        files.append(type("Item", (), {"path": str(path)})())
    key = FeatureSetKey("vgg16", "block5_pool:0", 64, "caffe", "GlobalAveragePooling2D", "w" * 32, "s" * 32)
    FeatureCache().features(key, files, lambda items: np.ones((len(items), 16), np.float32))


def test_status_lists_the_sets_and_clear_empties_them(tmp_path, capsys):
    _fill(tmp_path)
    assert cli.main(["cache", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["entries"] == 4 and status["bytes"] >= 4 * 16 * 4 and len(status["sets"]) == 1
    assert "block5_pool:0" in status["sets"][0]["description"]
    assert cli.main(["cache"]) == 0
    assert "4 image features in 1 set," in capsys.readouterr().out
    assert cli.main(["cache", "clear"]) == 0
    assert "Cleared the feature cache" in capsys.readouterr().out
    assert cli.main(["cache", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 0


def test_a_bad_size_limit_is_a_user_error(monkeypatch, capsys):
    monkeypatch.setenv("TLSTUDIO_FEATURE_CACHE_MB", "big")
    assert cli.main(["cache", "status"]) == common.EXIT_USER_ERROR
    assert "TLSTUDIO_FEATURE_CACHE_MB" in capsys.readouterr().err
