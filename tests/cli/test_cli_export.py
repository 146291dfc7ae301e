"""``tlstudio export``: the check table with agreement and accuracy, the cost table, and the exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tlstudio import cli
from tlstudio.core.data.images import load_rgb
from tlstudio.core.data.samples import SAMPLE_CLASSES, make_sample_folders
from tlstudio.core.spec.recipe import BaseSpec, DataSpec, Recipe, save_project
from tlstudio.core.use import export_calibration
from tlstudio.core.use.export_calibration import ImageSet


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A trained run folder of a tiny classifier on generated images."""
    root = tmp_path_factory.mktemp("cli-export")
    images_root = make_sample_folders(root / "images")
    paths = sorted(images_root.rglob("*.png"))
    images = np.stack([load_rgb(p, 32) for p in paths]).astype("float32")
    labels = np.array([SAMPLE_CLASSES.index(p.parent.name) for p in paths])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=10, batch_size=12, verbose=0)
    folder = root / "run"
    folder.mkdir()
    recipe = Recipe(data=DataSpec(folders=(str(images_root),)), base=BaseSpec(name="vgg16", weights="none", input_size=32))
    save_project(recipe, folder / "recipe.json")
    (folder / "classes.json").write_text(json.dumps(list(SAMPLE_CLASSES)))
    (folder / "history.json").write_text(json.dumps({"loss": [1.0]}))
    (folder / "metrics.json").write_text(json.dumps({"val_accuracy": 0.9}))
    model.save(folder / "model.keras")
    return folder


def test_export_prints_checks_costs_and_scripts(run_dir, tmp_path, capsys):
    code = cli.main(["export", str(run_dir), "--to", str(tmp_path / "out"), "--formats", "tflite-int8,onnx", "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "top-1 agreement [95% CI]" in out and "in-app accuracy" in out
    assert "Costs measured on" in out and "cores" in out
    assert "latency median" in out and "MiB" in out and "ONNX Runtime" in out
    assert "int8 calibrated on" in out and "stratified over 3 classes" in out
    assert "predict_onnx.py" in out and "predict_tflite.py" in out
    assert "NOT RECOMMENDED" not in out


@pytest.mark.parametrize("asked", [False, True])
def test_the_converters_cpp_lines_show_only_when_asked(run_dir, tmp_path, asked):
    """TFLite's quantizer and interpreter print to the terminal from C++; hidden unless TF_CPP_MIN_LOG_LEVEL
    is set (then they show, which is what makes the hidden case a real check)."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    if asked:
        env["TF_CPP_MIN_LOG_LEVEL"] = "0"
    result = subprocess.run(
        [sys.executable, "-m", "tlstudio", "export", str(run_dir), "--to", str(tmp_path / "out"),
         "--formats", "tflite-int8", "--no-costs", "-q"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    shown = [line for line in result.stderr.splitlines() if "XNNPACK delegate" in line or "fully_quantize" in line]
    assert len(shown) >= 2 if asked else shown == []


def test_a_not_recommended_int8_model_is_kept_and_only_strict_fails(run_dir, tmp_path, capsys, monkeypatch):
    real = export_calibration.calibration_set

    def black(*args, **kwargs) -> ImageSet:
        found = real(*args, **kwargs)
        return ImageSet(found.images * 0, found.labels, found.note, found.per_class)

    monkeypatch.setattr(export_calibration, "calibration_set", black)
    args = ["export", str(run_dir), "--formats", "tflite,tflite-int8", "--no-costs", "-q"]
    assert cli.main([*args, "--to", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert "NOT RECOMMENDED" in captured.out and "tflite-int8 NOT RECOMMENDED" in captured.err
    assert "Costs measured on" not in captured.out
    assert (tmp_path / "a" / "model_int8.tflite").is_file()
    assert cli.main([*args, "--to", str(tmp_path / "b"), "--strict", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    statuses = {check["format"]: check["status"] for check in report["checks"]}
    assert statuses == {"tflite": "passed", "tflite-int8": "not recommended"}
