"""``tlstudio weights`` and ``tlstudio devices``, run through the CLI's entry function."""

from __future__ import annotations

import hashlib
import json

import pytest

from tlstudio import cli
from tlstudio.core.model import backbones
from tlstudio.core.spec import paths


@pytest.fixture
def fake_official_file(tmp_path, monkeypatch):
    """A generated file registered as the official VGG16 no-top weights."""
    payload = bytes(range(256)) * 64
    source = tmp_path / "downloaded.h5"
    source.write_bytes(payload)
    official = backbones.OFFICIAL_WEIGHTS[("vgg16", False)]
    fake = backbones.WeightsFile(
        "vgg16", False, official.filename, "http://127.0.0.1:9/unused.h5", hashlib.md5(payload).hexdigest(), len(payload)
    )
    monkeypatch.setitem(backbones.OFFICIAL_WEIGHTS, ("vgg16", False), fake)
    return source


def _status(capsys) -> dict[tuple[str, object], dict]:
    assert cli.main(["weights", "status", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    return {(entry["base"], entry["include_top"]): entry for entry in entries}


def test_status_import_and_status_again(fake_official_file, capsys):
    before = _status(capsys)
    assert before[("vgg16", False)]["status"] == "missing"
    assert before[("vgg19", True)]["size_bytes"] == 574_710_816
    assert before[("efficientnet-lite0", None)]["status"] == "bundled"

    assert cli.main(["weights", "import", str(fake_official_file)]) == 0
    cached = paths.keras_models_dir() / backbones.OFFICIAL_WEIGHTS[("vgg16", False)].filename
    assert cached.read_bytes() == fake_official_file.read_bytes()
    assert f"-> {cached}" in capsys.readouterr().out

    after = _status(capsys)
    assert after[("vgg16", False)] == {**before[("vgg16", False)], "status": "cached", "path": str(cached)}


def test_importing_a_wrong_file_is_one_line_and_exit_2(tmp_path, capsys):
    wrong = tmp_path / "wrong.h5"
    wrong.write_bytes(b"not weights")
    assert cli.main(["weights", "import", str(wrong)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("tlstudio: error: ") and "none of the official VGG weights files" in err[0]


def test_download_without_a_server_names_the_ways_to_provide_the_file(fake_official_file, capsys, monkeypatch):
    monkeypatch.setenv(backbones.MIRROR_ENV, "http://127.0.0.1:9")
    assert cli.main(["weights", "download", "vgg16"]) == 2
    err = capsys.readouterr().err
    assert "tlstudio weights import FILE" in err and "Traceback" not in err


def test_devices_lists_the_cpu_and_says_why_no_gpu(capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cli.main(["devices", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    kinds = [device["kind"] for device in report["devices"]]
    assert "CPU" in kinds and "GPU" not in kinds
    assert report["badge"].startswith("CPU")
    assert report["cpu_only_reason"]
