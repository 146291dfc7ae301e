"""Evaluation: metrics against hand-computed values, a run's splits, the saved file, bad run folders."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from tlstudio.core.use import evaluation as ev
from tlstudio.core.use import export
from tlstudio.core.train import runs
from tlstudio.core.model.classifier import build_classifier
from tlstudio.core.data.dataset import scan_dataset
from tlstudio.core.spec.errors import Cancelled, DataError, ModelFileError, UserError
from tlstudio.core.spec.events import Progress
from tlstudio.core.data.images import load_rgb
from tlstudio.core.use.metrics import per_class_f1, row_normalised, top_k_accuracy
from tlstudio.core.spec.recipe import BaseSpec, DataSpec, HeadSpec, Recipe, save_project
from tlstudio.core.data.samples import SAMPLE_CLASSES, make_sample_folders, make_tiny_vgg

# --- metrics added for evaluation -------------------------------------------------------


def test_f1_by_hand():
    cm = np.array([[2, 1, 0], [0, 1, 1], [2, 0, 3]])
    # class 0: TP 2, FP 2, FN 1 -> 4/7; class 1: TP 1, FP 1, FN 1 -> 2/4; class 2: TP 3, FP 1, FN 2 -> 6/9
    assert per_class_f1(cm) == pytest.approx([4 / 7, 2 / 4, 6 / 9])
    never_predicted = per_class_f1(np.array([[3, 0, 0], [1, 0, 0], [0, 0, 0]]))
    assert never_predicted[0] == pytest.approx(6 / 7)
    assert never_predicted[1] == 0.0 and math.isnan(never_predicted[2])


def test_row_normalised_and_top_k_by_hand():
    assert row_normalised(np.array([[3, 1], [0, 0]])).tolist() == [[0.75, 0.25], [0.0, 0.0]]
    probabilities = np.array([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6], [0.4, 0.4, 0.2], [0.2, 0.5, 0.3]])
    labels = [2, 1, 1, 0]
    assert top_k_accuracy(probabilities, labels, 1) == 0.0  # the tie in row 3 ranks class 0 before class 1
    assert top_k_accuracy(probabilities, labels, 2) == pytest.approx(2 / 4)  # rows 2 and 3
    assert top_k_accuracy(probabilities, labels, 3) == 1.0
    assert top_k_accuracy(probabilities, labels, 10) == 1.0
    with pytest.raises(ValueError, match="k must be at least 1"):
        top_k_accuracy(probabilities, labels, 0)


# --- the evaluation of fixed predictions ---------------------------------------------------

PATHS = ["a1.png", "a2.png", "b1.png", "b2.png", "c1.png"]
LABELS = [0, 0, 1, 1, 2]
PROBABILITIES = np.array(
    [
        [0.7, 0.2, 0.1],  # a, right
        [0.3, 0.6, 0.1],  # a, predicted b
        [0.1, 0.8, 0.1],  # b, right
        [0.55, 0.4, 0.05],  # b, predicted a
        [0.2, 0.25, 0.55],  # c, right but unsure
    ]
)


def test_evaluation_of_fixed_predictions_by_hand():
    result = ev.evaluate_probabilities(("a", "b", "c"), PATHS, LABELS, PROBABILITIES, top_k=2)
    assert result.confusion_matrix.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert result.normalised_confusion_matrix.tolist() == [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]
    assert result.accuracy == pytest.approx(3 / 5)
    assert result.top_k == 2 and result.top_k_accuracy == pytest.approx(1.0)
    a, b, c = result.per_class
    assert (a.precision, a.recall, a.f1, a.support) == pytest.approx((0.5, 0.5, 0.5, 2))
    assert (b.precision, b.recall, b.f1, b.support) == pytest.approx((0.5, 0.5, 0.5, 2))
    assert (c.precision, c.recall, c.f1, c.support) == pytest.approx((1.0, 1.0, 1.0, 1))
    losses = [-math.log(p) for p in (0.7, 0.3, 0.8, 0.4, 0.55)]
    assert [r.loss for r in result.records] == pytest.approx(losses)
    assert result.loss == pytest.approx(sum(losses) / 5)
    assert [r.predicted for r in result.records] == [0, 1, 1, 0, 2]

    worst = ev.mistakes(result)
    assert [r.path for r in worst] == ["a2.png", "b2.png", "c1.png"]  # by loss: 1.20, 0.92, 0.60
    assert [r.path for r in ev.mistakes(result, limit=1)] == ["a2.png"]
    assert [r.path for r in ev.cell_records(result, 1, 0)] == ["b2.png"]
    assert [r.path for r in ev.cell_records(result, 0, 0)] == ["a1.png"]
    with pytest.raises(ValueError, match="outside the 3x3"):
        ev.cell_records(result, 3, 0)


def test_another_top_k_is_measured_from_the_same_predictions():
    result = ev.evaluate_probabilities(("a", "b", "c"), PATHS, LABELS, PROBABILITIES, top_k=2, split="test")
    top1 = ev.with_top_k(result, 1)
    assert top1.top_k == 1 and top1.top_k_accuracy == pytest.approx(3 / 5)
    assert top1.accuracy == result.accuracy and top1.split == "test"
    assert top1.records == result.records
    assert top1.confusion_matrix.tolist() == result.confusion_matrix.tolist()
    assert ev.with_top_k(top1, 2).top_k_accuracy == pytest.approx(1.0)


def test_top_k_is_capped_at_the_number_of_classes_and_nan_is_null_in_json():
    probabilities = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0]])
    result = ev.evaluate_probabilities(("a", "b", "c"), ["x", "y"], [0, 1], probabilities, top_k=5)
    assert result.top_k == 3 and result.top_k_accuracy == 1.0
    summary = json.loads(json.dumps(result.summary(), allow_nan=False))
    never = summary["per_class"][2]
    assert never["precision"] is None and never["recall"] is None and never["f1"] is None
    assert summary["per_class"][1]["f1"] == 0.0  # has an image, never predicted
    back = ev.Evaluation.from_dict(result.to_dict())
    assert back.confusion_matrix.tolist() == result.confusion_matrix.tolist()
    assert back.records == result.records and math.isnan(back.per_class[2].precision)


# --- evaluating a run folder ------------------------------------------------------------------


def write_run(folder: Path, data: DataSpec, model) -> Path:
    """A run folder as training writes it."""
    folder.mkdir(parents=True)
    recipe = Recipe(data=data, base=BaseSpec(name="file", model_file="tiny.keras", weights="none", input_size=32))
    save_project(recipe, folder / runs.RECIPE_FILE)
    runs.write_json(folder / runs.CLASSES_FILE, list(SAMPLE_CLASSES))
    runs.write_json(folder / runs.HISTORY_FILE, {"loss": [1.0]})
    runs.write_json(folder / runs.METRICS_FILE, {"val_accuracy": 0.5, "val_loss": 1.0})
    model.save(folder / runs.MODEL_FILE)
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run on train/, val/ and test/ folders with a briefly trained tiny classifier."""
    root = tmp_path_factory.mktemp("evaluation")
    data = root / "data"
    make_sample_folders(data / "train", per_class=6, size=32, seed=0)
    make_sample_folders(data / "val", per_class=3, size=32, seed=1)
    make_sample_folders(data / "test", per_class=2, size=32, seed=2)
    paths = sorted((data / "train").rglob("*.png"))
    images = np.stack([load_rgb(p) for p in paths]).astype("float32")
    labels = np.array([SAMPLE_CLASSES.index(p.parent.name) for p in paths])
    keras.utils.set_random_seed(0)
    model = build_classifier(make_tiny_vgg(), "block3_pool:0", 3, HeadSpec(batch_norm=False), "lite")
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=3, batch_size=6, verbose=0)
    return write_run(root / "run", DataSpec(folders=(str(data),)), model)


def test_evaluate_run_measures_the_validation_split_and_saves_it(run_dir):
    events = []
    result = ev.evaluate_run(run_dir, top_k=2, on_event=events.append)
    assert result.split == "val" and result.classes == SAMPLE_CLASSES
    assert result.images == 9 and int(result.confusion_matrix.sum()) == 9
    assert [c.support for c in result.per_class] == [3, 3, 3]
    assert result.accuracy == pytest.approx(np.mean([r.correct for r in result.records]))
    assert all(r.path.startswith(str(run_dir.parent / "data" / "val")) for r in result.records)
    assert all(sum(r.probabilities) == pytest.approx(1.0, abs=1e-4) for r in result.records)
    assert any(isinstance(e, Progress) and e.task == "evaluate" for e in events)

    saved = ev.load_evaluations(run_dir)
    assert set(saved) == {"val"}
    assert saved["val"].confusion_matrix.tolist() == result.confusion_matrix.tolist()
    assert saved["val"].records == result.records


def test_test_split_is_kept_beside_the_validation_one_and_reaches_the_model_card(run_dir):
    ev.evaluate_run(run_dir, split="val", top_k=1)
    result = ev.evaluate_run(run_dir, split="test")
    assert result.split == "test" and result.images == 6 and result.top_k == 3
    assert set(ev.load_evaluations(run_dir)) == {"val", "test"}

    run = runs.load_run(run_dir)
    card = export.model_card(run, run.load_model(), {}, [])
    assert set(card["evaluation"]) == {"val", "test"}
    assert card["evaluation"]["test"]["confusion_matrix"] == result.confusion_matrix.tolist()
    assert "records" not in card["evaluation"]["test"]
    json.dumps(card, allow_nan=False)


def test_a_dataset_given_directly_is_evaluated_without_folders_in_the_recipe(run_dir, tmp_path):
    model = runs.load_run(run_dir).load_model()
    no_folders = write_run(tmp_path / "run", DataSpec(), model)
    with pytest.raises(UserError, match="does not name its data folders"):
        ev.evaluate_run(no_folders, save=False)
    dataset = scan_dataset([run_dir.parent / "data"])
    result = ev.evaluate_run(no_folders, dataset=dataset, model=model)
    assert result.images == 9 and result.classes == SAMPLE_CLASSES
    assert sorted(r.path for r in result.records) == sorted(item.path for item in dataset.val)
    assert set(ev.load_evaluations(no_folders)) == {"val"}
    with pytest.raises(DataError, match="without folders"):
        ev.evaluate_run(no_folders, split="test", dataset=scan_dataset([run_dir.parent / "data" / "train"]))


def test_unreadable_images_are_skipped_and_listed(run_dir, tmp_path):
    copy = tmp_path / "run"
    data = tmp_path / "data"
    shutil.copytree(run_dir.parent / "data", data)
    broken = data / "val" / "circles" / "circles_000.png"
    broken.write_bytes(broken.read_bytes()[:60])
    write_run(copy, DataSpec(folders=(str(data),)), runs.load_run(run_dir).load_model())
    result = ev.evaluate_run(copy, save=False)
    assert result.images == 8
    assert [s.path for s in result.skipped] == [str(broken)]
    assert not (copy / ev.EVALUATION_FILE).exists()


def test_cancel_stops_between_batches(run_dir):
    with pytest.raises(Cancelled):
        ev.evaluate_run(run_dir, should_stop=lambda: True, save=False)


def test_a_missing_split_is_a_clear_error(run_dir, tmp_path):
    model = runs.load_run(run_dir).load_model()
    folders = make_sample_folders(tmp_path / "flat", per_class=4, size=32)
    flat = write_run(tmp_path / "flat_run", DataSpec(folders=(str(folders),)), model)
    with pytest.raises(DataError, match="no test split.*test/"):
        ev.evaluate_run(flat, split="test")

    tiny = make_sample_folders(tmp_path / "tiny", per_class=1, size=32)
    tiny_run = write_run(tmp_path / "tiny_run", DataSpec(folders=(str(tiny),)), model)
    with pytest.raises(DataError, match="no validation images"):
        ev.evaluate_run(tiny_run)
    with pytest.raises(UserError, match="Unknown split.*'train'"):
        ev.evaluate_run(flat, split="train")
    with pytest.raises(UserError, match="top-k"):
        ev.evaluate_run(flat, top_k=0)


def test_older_or_foreign_run_folders_name_what_is_missing(run_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    (old / runs.MODEL_FILE).unlink()
    with pytest.raises(ModelFileError, match="no model.keras"):
        ev.evaluate_run(old)
    (old / runs.CLASSES_FILE).unlink()
    with pytest.raises(UserError, match="lacks classes.json"):
        ev.evaluate_run(old)

    newer = tmp_path / "newer"
    shutil.copytree(run_dir, newer)
    runs.write_json(newer / ev.EVALUATION_FILE, {"tlstudio_evaluation": 99, "splits": {}})
    with pytest.raises(UserError, match="newer TL Studio"):
        ev.load_evaluations(newer)
    runs.write_json(newer / ev.EVALUATION_FILE, {"tlstudio_evaluation": 1, "splits": {"val": {"split": "val"}}})
    with pytest.raises(UserError, match="lacks classes, top_k"):
        ev.load_evaluations(newer)
    result = ev.evaluate_run(newer, split="test")  # a damaged file is replaced, not a reason to fail
    assert set(ev.load_evaluations(newer)) == {"test"} and result.images == 6


def test_data_with_classes_the_model_does_not_know_is_refused(run_dir, tmp_path):
    data = make_sample_folders(tmp_path / "more", classes=(*SAMPLE_CLASSES, "triangles"), per_class=4, size=32)
    more = write_run(tmp_path / "more_run", DataSpec(folders=(str(data),)), runs.load_run(run_dir).load_model())
    with pytest.raises(DataError, match="not trained on: triangles"):
        ev.evaluate_run(more)


def corrupt_png_data(path: Path) -> None:
    """Damage the pixel data of a PNG but not its header: the header-only scan still accepts it."""
    raw = bytearray(path.read_bytes())
    start = raw.index(b"IDAT") + 4
    for offset in range(start + 2, min(start + 40, len(raw) - 12)):
        raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))


def test_corrupt_pixel_data_vanished_files_and_fifos_are_counted_and_named(run_dir, tmp_path):
    import os

    from tlstudio.core.data import images
    from tlstudio.core.spec.events import Message

    data = tmp_path / "data"
    shutil.copytree(run_dir.parent / "data", data)
    corrupt = data / "val" / "squares" / "squares_000.png"
    corrupt_png_data(corrupt)
    images.probe_image(corrupt)
    dataset = scan_dataset([data])
    vanished = data / "val" / "stripes" / "stripes_000.png"
    vanished.unlink()
    fifo = data / "val" / "circles" / "circles_000.png"
    fifo.unlink()
    os.mkfifo(fifo)
    events = []
    copy = write_run(tmp_path / "run", DataSpec(folders=(str(data),)), runs.load_run(run_dir).load_model())
    result = ev.evaluate_run(copy, dataset=dataset, save=False, on_event=events.append)
    assert result.images == 6
    assert sorted(s.path for s in result.skipped) == sorted(map(str, (corrupt, vanished, fifo)))
    messages = [e.text for e in events if isinstance(e, Message)]
    assert any(m.startswith("6 classified, 3 could not be read; left out:") and str(corrupt) in m for m in messages)
