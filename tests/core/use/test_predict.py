"""Prediction: run folders and exported models, folders expanded, bad files reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from tlstudio.core.spec.errors import Cancelled, ModelFileError, UserError
from tlstudio.core.spec.events import Message, Progress
from tlstudio.core.use.predict import Prediction, load_predictor, predict_files
from tlstudio.core.spec.recipe import BaseSpec, DataSpec, Recipe, save_project
from tlstudio.core.data.samples import SAMPLE_CLASSES


def tiny_classifier():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Dense(len(SAMPLE_CLASSES), activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def model():
    return tiny_classifier()


@pytest.fixture
def run_dir(tmp_path, image_root, model) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    recipe = Recipe(data=DataSpec(folders=(str(image_root),)), base=BaseSpec(weights="none", input_size=32))
    save_project(recipe, folder / "recipe.json")
    (folder / "classes.json").write_text(json.dumps(list(SAMPLE_CLASSES)))
    (folder / "metrics.json").write_text(json.dumps({"val_accuracy": 0.5}))
    model.save(folder / "model.keras")
    return folder


@pytest.fixture
def mixed_folder(image_root) -> Path:
    """Good images in nested folders, one corrupt JPEG, a text file and a hidden file."""
    folder = image_root / "circles"
    (folder / "nested").mkdir()
    shutil.copy(folder / "circles_000.png", folder / "nested" / "again.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"")
    return folder


def test_run_folder_predicts_top_k(run_dir, image_root, model):
    predictor = load_predictor(run_dir)
    assert predictor.classes == SAMPLE_CLASSES and predictor.input_size == 32
    path = image_root / "squares" / "squares_000.png"
    [result] = predict_files(predictor, [path], top_k=2)
    assert result.error == "" and result.path == str(path)
    assert len(result.top) == 2
    assert result.top[0][1] >= result.top[1][1]
    assert {name for name, _ in result.top} <= set(SAMPLE_CLASSES)

    from tlstudio.core.data.images import load_rgb

    expected = np.asarray(model(load_rgb(path, 32)[None].astype("float32"), training=False))[0]
    assert result.top[0] == (SAMPLE_CLASSES[int(expected.argmax())], pytest.approx(float(expected.max()), abs=1e-6))


def test_folder_with_a_corrupt_file(run_dir, mixed_folder):
    events = []
    results = predict_files(load_predictor(run_dir), [mixed_folder], top_k=5, on_event=events.append, batch_size=4)
    names = [Path(r.path).name for r in results]
    assert "notes.txt" not in names and ".hidden.png" not in names
    assert "again.png" in names
    assert len(results) == 12 + 2
    broken = next(r for r in results if r.path.endswith("broken.jpg"))
    assert broken.error and broken.top == ()
    good = [r for r in results if not r.error]
    assert len(good) == 13
    assert all(len(r.top) == 3 and abs(sum(p for _, p in r.top) - 1) < 1e-4 for r in good)
    assert all(isinstance(e, Progress) and e.task == "predict" for e in events if not isinstance(e, Message))
    assert events[-1].done == events[-1].total == len(results)


def test_missing_file_is_reported_not_raised(run_dir, tmp_path):
    results = predict_files(load_predictor(run_dir), [tmp_path / "nope.png"])
    assert results == [Prediction(str(tmp_path / "nope.png"), (), "no such file")]


def test_cancel_between_batches(run_dir, image_root):
    with pytest.raises(Cancelled):
        predict_files(load_predictor(run_dir), [image_root], batch_size=4, should_stop=lambda: True)


def test_exported_keras_with_labels(tmp_path, model):
    folder = tmp_path / "export"
    folder.mkdir()
    model.save(folder / "model.keras")
    with pytest.raises(ModelFileError, match="labels.txt"):
        load_predictor(folder / "model.keras")
    (folder / "labels.txt").write_text("a\nb\nc\n")
    assert load_predictor(folder).classes == ("a", "b", "c")
    assert load_predictor(folder / "model.keras").classes == ("a", "b", "c")
    (folder / "labels.txt").write_text("a\nb\n")
    with pytest.raises(ModelFileError, match="3 outputs but 2 class names"):
        load_predictor(folder)


def test_bad_model_paths(tmp_path):
    with pytest.raises(UserError, match="No model or run"):
        load_predictor(tmp_path / "missing")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(UserError, match="Received"):
        load_predictor(tmp_path / "model.onnx")
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    (tmp_path / "labels.txt").write_text("a\n")
    with pytest.raises(ModelFileError, match="cannot be read as a .keras model.*damaged"):
        load_predictor(tmp_path / "broken.keras")


def test_top_k_must_be_positive(run_dir, image_root):
    with pytest.raises(UserError, match="top_k"):
        predict_files(load_predictor(run_dir), [image_root], top_k=0)


def test_unreadable_files_are_counted_named_and_summarised(run_dir, image_root):
    import os

    from tlstudio.core.spec.events import Message
    from tlstudio.core.use.predict import summary_line

    folder = image_root / "circles"
    raw = bytearray((folder / "circles_001.png").read_bytes())
    start = raw.index(b"IDAT") + 6
    raw[start:start + 30] = bytes(b ^ 0x5A for b in raw[start:start + 30])
    (folder / "corrupt.png").write_bytes(bytes(raw))
    os.mkfifo(folder / "pipe.png")
    events = []
    predictions = predict_files(load_predictor(run_dir), [folder / "corrupt.png", folder / "pipe.png",
                                                          folder / "circles_002.png", folder / "gone.png"],
                                on_event=events.append)
    assert [bool(p.error) for p in predictions] == [True, True, False, True]
    assert summary_line(predictions) == "1 classified, 3 could not be read"
    warning = [e.text for e in events if isinstance(e, Message)][0]
    assert warning.startswith("1 classified, 3 could not be read; left out:") and "corrupt.png" in warning
