"""The data health check: injected label errors, copies and outliers are found, on features and on images."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tlstudio.core.spec.errors import Cancelled, DataError
from tlstudio.core.use import health


def _clusters(per_class: int = 40, classes: int = 3, dim: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, dim)) * 4
    features = np.concatenate([centres[c] + rng.normal(0, 1, (per_class, dim)) for c in range(classes)])
    labels = np.repeat(np.arange(classes), per_class)
    return features, labels


def test_injected_wrong_labels_rank_first_with_the_true_class_suggested():
    features, labels = _clusters()
    wrong = {5: 1, 50: 2, 100: 0}
    given = labels.copy()
    for index, label in wrong.items():
        given[index] = label
    paths = [f"img{i}.png" for i in range(len(labels))]
    report = health.find_issues(features, given, ("a", "b", "c"), paths, ["train"] * len(paths))
    top = report.mislabeled[: 2 * len(wrong)]
    found = {m.path: m for m in top}
    for index in wrong:
        assert paths[index] in found
        assert found[paths[index]].suggested == ("a", "b", "c")[labels[index]]
    assert [m.score for m in report.mislabeled] == sorted((m.score for m in report.mislabeled), reverse=True)


def test_a_clean_set_has_no_label_issues():
    features, labels = _clusters()
    paths = [f"img{i}.png" for i in range(len(labels))]
    report = health.find_issues(features, labels, ("a", "b", "c"), paths, ["train"] * len(paths))
    assert report.mislabeled == ()


def test_near_duplicate_across_classes_and_splits_and_an_outlier_are_found():
    features, labels = _clusters()
    rng = np.random.default_rng(1)
    features = np.vstack([features, features[7] + rng.normal(0, 0.01, features.shape[1]), np.full(64, 40.0)])
    labels = np.append(labels, [1, 2])
    paths = [f"img{i}.png" for i in range(len(labels))]
    splits = ["train"] * (len(paths) - 2) + ["val", "train"]
    report = health.find_issues(features, labels, ("a", "b", "c"), paths, splits)
    pair = report.near_duplicates[0]
    assert set(pair.paths) == {"img7.png", paths[-2]}
    assert pair.across_splits and pair.across_classes and pair.similarity > 0.99
    assert report.outliers[0].path == paths[-1]
    as_json = report.to_dict()
    assert set(as_json) == {"mislabeled", "near_duplicates", "outliers"}
    assert as_json["near_duplicates"][0]["paths"] == list(pair.paths)


def test_a_class_with_one_image_is_a_clear_error():
    features, labels = _clusters(per_class=5)
    labels[-1] = 3
    with pytest.raises(DataError, match="at least 2 images"):
        health.out_of_fold_probabilities(features, labels, 4)


def test_stop_cancels_the_folds():
    features, labels = _clusters()
    with pytest.raises(Cancelled):
        health.out_of_fold_probabilities(features, labels, 3, should_stop=lambda: True)


def test_moved_images_are_found_on_efficientnet_lite0_features(tmp_path):
    from tlstudio.core.data.dataset import scan_dataset
    from tlstudio.core.data.samples import make_sample_folders
    from tlstudio.core.model import backbones
    from tlstudio.core.spec.recipe import BaseSpec

    root = make_sample_folders(tmp_path / "images", per_class=30, seed=1)
    moved = [root / "squares" / f"moved_{n}.png" for n in range(2)]
    for n, target in enumerate(moved):
        shutil.move(root / "circles" / f"circles_{n:03d}.png", target)
    spec = BaseSpec(name="efficientnet-lite0", input_size=64)
    base = backbones.build_base(spec)
    report = health.check_dataset(base, scan_dataset([root]), None, 64, backbones.preprocessing_mode(spec))
    top = {m.path: m for m in report.mislabeled[: 2 * len(moved)]}
    for path in moved:
        assert str(path) in top and top[str(path)].suggested == "circles"
