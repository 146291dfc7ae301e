"""The feature map: a projection in [0, 1] and a PNG drawn without Qt."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tlstudio.core.spec.errors import DataError, UserError
from tlstudio.core.use import feature_map


def test_projection_keeps_clusters_apart():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (20, 30)) + 10 * c for c in range(2)])
    points = feature_map.project(x, "tsne")
    assert points.shape == (40, 2) and points.min() >= 0 and points.max() <= 1
    a, b = points[:20].mean(axis=0), points[20:].mean(axis=0)
    spread = max(np.linalg.norm(points[:20] - a, axis=1).max(), np.linalg.norm(points[20:] - b, axis=1).max())
    assert np.linalg.norm(a - b) > 2 * spread
    with pytest.raises(DataError, match=r"Received: 1 image\.$"):
        feature_map.project(x[:1])
    with pytest.raises(UserError, match="method"):
        feature_map.project(x, "umap-typo")


def test_map_renders_a_png_with_flags(image_root, tmp_path):
    paths = sorted(str(p) for p in image_root.rglob("*.png"))[:9]
    items = [SimpleNamespace(path=p, label=i % 3) for i, p in enumerate(paths)] + [
        SimpleNamespace(path=str(tmp_path / "missing.png"), label=0)]
    x = np.random.default_rng(0).normal(size=(len(items), 8))
    fmap = feature_map.build_map(x, items, ["train"] * len(items), ("a", "b", "c"), "pca",
                                 flags={paths[0]: "mislabeled"})
    out = feature_map.render_png(fmap, tmp_path / "map.png", size=400)
    with Image.open(out) as picture:
        assert picture.width == 400 and picture.height > 400
        pixels = np.asarray(picture.convert("RGB"))
    assert (pixels == [230, 0, 0]).all(axis=-1).any()
    assert fmap.to_dict()["points"][0]["flag"] == "mislabeled"


def test_the_evaluations_mistakes_get_a_ring_and_a_legend_line_only_when_present(tmp_path):
    plain = feature_map.FeatureMap(np.zeros((2, 2)), ("a", "b"), (0, 1), ("x", "y"), ("train", "val"))
    marked = feature_map.FeatureMap(np.zeros((2, 2)), ("a", "b"), (0, 1), ("x", "y"), ("train", "val"),
                                    flags=feature_map.mistake_flags(SimpleNamespace(records=(
                                        SimpleNamespace(path="a", correct=False), SimpleNamespace(path="b", correct=True)))))
    assert marked.flags == {"a": "misclassified"}
    heights = []
    for name, fmap in (("plain", plain), ("marked", marked)):
        with Image.open(feature_map.render_png(fmap, tmp_path / f"{name}.png", size=300)) as picture:
            heights.append(picture.height)
    assert heights[1] == heights[0] + 22


def test_render_refuses_an_unwritable_place_and_leaves_nothing(tmp_path):
    fmap = feature_map.FeatureMap(np.zeros((2, 2)), ("a", "b"), (0, 1), ("x", "y"), ("train", "val"))
    with pytest.raises(UserError, match="Cannot write the map"):
        feature_map.render_png(fmap, tmp_path / "no-such-folder" / "map.png", size=300)


def test_the_module_does_not_import_qt():
    code = "import sys, tlstudio.core.use.feature_map as m; assert not any(k.startswith('PySide6') for k in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
