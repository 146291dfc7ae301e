"""Export: every format round-trips, the model card describes the model, writes are atomic."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from tlstudio.core.use import export as export_module
from tlstudio.core.spec.errors import Cancelled, ExportError
from tlstudio.core.spec.events import Progress
from tlstudio.core.use.export import DEFAULT_FORMATS, FORMATS, export_run
from tlstudio.core.data.images import load_rgb
from tlstudio.core.spec.recipe import BaseSpec, DataSpec, Recipe, save_project
from tlstudio.core.train.runs import load_run
from tlstudio.core.data.samples import SAMPLE_CLASSES, make_sample_folders


def tiny_classifier(num_classes: int = 3):
    """Raw RGB 0..255 in, softmax out: the shape of a TL Studio classifier, in miniature."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.BatchNormalization(momentum=0.8)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head_predictions")(x)
    return keras.Model(inputs, outputs)


def write_run(folder: Path, image_root: Path | None, model, cut_tensor: str | None = "block3_pool:0") -> Path:
    """A run folder as training writes it."""
    folder.mkdir(parents=True)
    data = DataSpec(folders=(str(image_root),)) if image_root else DataSpec()
    recipe = Recipe(data=data, base=BaseSpec(name="vgg16", weights="none", input_size=32), cut_tensor=cut_tensor)
    save_project(recipe, folder / "recipe.json")
    (folder / "classes.json").write_text(json.dumps(list(SAMPLE_CLASSES)))
    (folder / "history.json").write_text(json.dumps({"loss": [1.0, 0.5]}))
    (folder / "metrics.json").write_text(json.dumps({"val_accuracy": 0.9, "val_loss": 0.3}))
    model.save(folder / "model.keras")
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    images_root = make_sample_folders(root / "images")
    paths = sorted(images_root.rglob("*.png"))
    images = np.stack([load_rgb(p, 32) for p in paths]).astype("float32")
    labels = np.array([SAMPLE_CLASSES.index(p.parent.name) for p in paths])
    model = tiny_classifier()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=8, batch_size=12, verbose=0)
    return write_run(root / "run", images_root, model)


@pytest.fixture(scope="module")
def full_export(run_dir, tmp_path_factory):
    destination = tmp_path_factory.mktemp("out") / "exported"
    events = []
    report = export_run(run_dir, destination, formats=FORMATS, on_event=events.append, cost_runs=5)
    return report, events


def test_every_format_round_trips(full_export):
    report, _ = full_export
    assert set(report.artifacts) == set(FORMATS)
    for path in report.artifacts.values():
        assert path.exists() and path.parent == report.destination
    by_format = {check.format: check for check in report.checks}
    assert set(by_format) == set(FORMATS)
    for fmt in ("keras", "savedmodel", "tflite", "onnx"):
        assert by_format[fmt].passed, by_format[fmt].message
        assert by_format[fmt].max_abs_diff <= 1e-4
    for fmt in ("tflite-fp16", "tflite-int8"):
        check = by_format[fmt]
        assert check.passed and check.status == "passed", check.message
        assert check.agreement_interval[1] >= 0.95
        assert check.labelled > 0 and check.accuracy is not None and check.reference_accuracy is not None
        assert "accuracy" in check.message and "95% CI" in check.message
    assert report.passed and report.failed == ()
    assert "validation images" in by_format["onnx"].message


def test_progress_is_reported_per_artifact(full_export):
    _, events = full_export
    progress = [e for e in events if isinstance(e, Progress)]
    assert all(e.task == "export" for e in progress)
    assert len(progress) == 3 * len(FORMATS) + 4
    assert progress[-1].done == progress[-1].total
    assert any("model.onnx" in e.message for e in progress)
    assert any(e.message.startswith("Measuring model_int8.tflite") for e in progress)


def test_labels_and_model_card(full_export, run_dir):
    report, _ = full_export
    labels = (report.destination / "labels.txt").read_text().splitlines()
    assert labels == list(SAMPLE_CLASSES)
    card = json.loads((report.destination / "model_card.json").read_text())
    assert card["classes"] == list(SAMPLE_CLASSES)
    assert card["input"]["shape"] == [None, 32, 32, 3]
    assert card["input"]["range"] == [0, 255]
    assert card["preprocessing"]["inside_model"] is True
    assert card["base_model"]["name"] == "vgg16"
    assert card["cut_tensor"] == "block3_pool:0"
    assert card["head"]["batch_norm"] is True
    assert card["metrics"]["val_accuracy"] == 0.9
    assert set(card["versions"]) >= {"tlstudio", "tensorflow", "keras"}
    assert card["created"].endswith("+00:00")
    assert set(card["artifacts"]) == set(FORMATS)
    assert all(check["passed"] for check in card["round_trip"])
    assert card["warnings"] == []
    assert card["example_scripts"] == ["predict_onnx.py", "predict_tflite.py"]
    assert card["int8_quantisation"]["input"]["dtype"] == "uint8" and card["int8_quantisation"]["input"]["scale"] > 0
    assert card["calibration"]["images"] == 30 and all(card["calibration"]["per_class"].values())
    assert {"alpha", "exif_orientation", "resize", "greyscale_and_palette", "rules"} <= set(card["input"])
    assert "white" in card["input"]["alpha"] and "BILINEAR" in card["input"]["resize"]
    assert card["run"] == str(load_run(run_dir).path)


def test_saved_model_signature_takes_raw_images(full_export, run_dir):
    import tensorflow as tf

    report, _ = full_export
    signature = tf.saved_model.load(str(report.artifacts["savedmodel"])).signatures["serving_default"]
    spec = signature.structured_input_signature[1]["image"]
    assert spec.shape.as_list() == [None, 32, 32, 3] and spec.dtype == tf.float32
    assert list(signature.structured_outputs) == ["probabilities"]


def test_onnx_and_tflite_io_names(full_export):
    import onnxruntime

    report, _ = full_export
    session = onnxruntime.InferenceSession(str(report.artifacts["onnx"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    interpreter = export_module.tflite_interpreter(report.artifacts["tflite-int8"])
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8


def test_default_formats_leave_out_int8(run_dir, tmp_path):
    report = export_run(load_run(run_dir), tmp_path / "default", formats=("keras", "tflite"), measure_costs=False)
    assert set(report.artifacts) == {"keras", "tflite"}
    assert "tflite-int8" not in DEFAULT_FORMATS and "tflite-fp16" not in DEFAULT_FORMATS
    assert sorted(p.name for p in report.destination.iterdir()) == [
        "labels.txt",
        "model.keras",
        "model.tflite",
        "model_card.json",
        "predict_tflite.py",
    ]
    assert report.costs == () and report.calibration == {}


def test_unknown_format_is_refused(run_dir, tmp_path):
    with pytest.raises(ExportError, match="Received: formats=\\['pt'\\]"):
        export_run(run_dir, tmp_path / "x", formats=["pt"])
    assert not (tmp_path / "x").exists()


def test_existing_destination_needs_overwrite(run_dir, tmp_path):
    destination = tmp_path / "dest"
    export_run(run_dir, destination, formats=("keras",), measure_costs=False)
    with pytest.raises(ExportError, match="already exists"):
        export_run(run_dir, destination, formats=("keras",), measure_costs=False)

    report = export_run(run_dir, destination, formats=("keras",), overwrite=True, measure_costs=False)
    assert report.artifacts["keras"].is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["dest"]


def test_overwrite_never_replaces_a_folder_of_documents(run_dir, tmp_path):
    destination = tmp_path / "documents"
    destination.mkdir()
    (destination / "thesis.docx").write_text("mine")
    with pytest.raises(ExportError, match="not an earlier TL Studio export.*--overwrite"):
        export_run(run_dir, destination, formats=("keras",), overwrite=True)
    assert [p.name for p in destination.iterdir()] == ["thesis.docx"]


def test_overwrite_never_replaces_the_run_folder_or_the_current_directory(run_dir, tmp_path, monkeypatch):
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(ExportError, match="must not be replaced"):
        export_run(run_dir, run_dir, formats=("keras",), overwrite=True)
    with pytest.raises(ExportError, match="must not be replaced"):
        export_run(run_dir, run_dir.parent, formats=("keras",), overwrite=True)
    assert sorted(p.name for p in run_dir.iterdir()) == before
    work = tmp_path / "cwd"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    with pytest.raises(ExportError, match="must not be replaced"):
        export_run(run_dir, ".", formats=("keras",), overwrite=True)
    assert (work / "notes.txt").read_text() == "mine"


def test_an_export_with_a_user_file_added_is_not_replaced(run_dir, tmp_path):
    destination = tmp_path / "dest"
    export_run(run_dir, destination, formats=("keras",))
    (destination / "my_notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="my_notes.txt"):
        export_run(run_dir, destination, formats=("keras",), overwrite=True)
    assert (destination / "my_notes.txt").read_text() == "mine"


def test_an_empty_folder_is_used(run_dir, tmp_path):
    destination = tmp_path / "empty"
    destination.mkdir()
    report = export_run(run_dir, destination, formats=("keras",))
    assert report.artifacts["keras"].is_file()


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_parent_is_a_clear_error(run_dir, tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(ExportError, match="permission denied"):
            export_run(run_dir, parent / "out", formats=("keras",), measure_costs=False)
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


def test_permission_denied_is_a_clear_error(run_dir, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(export_module.tempfile, "mkdtemp", refuse)
    with pytest.raises(ExportError, match="Permission denied.*choose a folder you can write to"):
        export_run(run_dir, tmp_path / "out", formats=("keras",), measure_costs=False)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_is_a_clear_error_and_cleans_up(run_dir, tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", full)
    with pytest.raises(ExportError, match="disk is full"):
        export_run(run_dir, tmp_path / "out", formats=("keras",), measure_costs=False)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_keeps_the_old_export(run_dir, tmp_path, monkeypatch):
    destination = tmp_path / "dest"
    export_run(run_dir, destination, formats=("keras",), measure_costs=False)
    before = sorted(p.name for p in destination.iterdir())
    monkeypatch.setattr(export_module, "_write_text", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(ExportError):
        export_run(run_dir, destination, formats=("keras",), overwrite=True, measure_costs=False)
    assert sorted(p.name for p in destination.iterdir()) == before
    assert leftovers(tmp_path) == []


def test_cancel_leaves_nothing(run_dir, tmp_path):
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        export_run(run_dir, tmp_path / "out", formats=("keras", "onnx"), should_stop=lambda: next(calls) >= 2, measure_costs=False)
    assert list(tmp_path.iterdir()) == []


def test_missing_images_fall_back_for_checks_and_stop_int8(run_dir, tmp_path):
    moved = tmp_path / "run"
    shutil.copytree(run_dir, moved)
    recipe_path = moved / "recipe.json"
    recipe = json.loads(recipe_path.read_text())
    recipe["data"]["folders"] = [str(tmp_path / "gone")]
    recipe_path.write_text(json.dumps(recipe))

    report = export_run(moved, tmp_path / "out", formats=("keras",), measure_costs=False)
    assert report.passed
    assert "generated random images" in report.checks[0].message

    with pytest.raises(ExportError, match="training images"):
        export_run(moved, tmp_path / "int8", formats=("tflite-int8",), measure_costs=False)
    assert not (tmp_path / "int8").exists()


def test_tl_studio_classifier_exports_with_its_preprocessing(tmp_path):
    """A classifier as the app builds it: Preprocess layer, nested base cut at a tensor, head."""
    from tlstudio.core.model.classifier import build_classifier
    from tlstudio.core.spec.recipe import HeadSpec
    from tlstudio.core.data.samples import make_tiny_vgg

    model = build_classifier(make_tiny_vgg(), "block2_pool:0", 3, HeadSpec(hidden_units=(8,)), "caffe")
    run = write_run(tmp_path / "run", make_sample_folders(tmp_path / "images"), model, cut_tensor=None)
    report = export_run(run, tmp_path / "out", formats=("savedmodel", "tflite", "onnx"), measure_costs=False)
    assert report.passed, [c.message for c in report.checks]
    card = json.loads((report.destination / "model_card.json").read_text())
    assert card["preprocessing"]["mode"] == "caffe"
    assert "ImageNet" in card["preprocessing"]["description"]
    assert card["cut_tensor"] == "block2_pool:0"


def test_exported_folder_predicts_like_the_run(full_export, run_dir):
    from tlstudio.core.use.predict import load_predictor, predict_files

    report, _ = full_export
    image = next(Path(load_run(run_dir).recipe.data.folders[0]).rglob("*.png"))
    [from_run] = predict_files(load_predictor(run_dir), [image])
    [from_export] = predict_files(load_predictor(report.destination), [image])
    assert [name for name, _ in from_export.top] == [name for name, _ in from_run.top]
    np.testing.assert_allclose([p for _, p in from_export.top], [p for _, p in from_run.top], atol=1e-6)


def test_cost_table_is_filled_and_sane(full_export):
    report, _ = full_export
    assert [cost.format for cost in report.costs] == list(FORMATS)
    assert "cores" in report.machine
    for cost in report.costs:
        path = report.artifacts[cost.format]
        on_disk = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
        assert cost.size_bytes == on_disk > 0
        assert cost.error == "", cost.error
        assert 0 < cost.latency_median_ms <= cost.latency_p95_ms < 60_000
        assert cost.runs >= 3 and cost.runtime
        assert 0 < cost.runtime_memory_mb <= cost.peak_memory_mb < 64_000
    by_format = {cost.format: cost for cost in report.costs}
    # each in its own fresh process: ONNX Runtime alone is far lighter than TensorFlow
    assert by_format["onnx"].peak_memory_mb < by_format["savedmodel"].peak_memory_mb
    assert by_format["onnx"].runtime.startswith("ONNX Runtime")
    card = json.loads((report.destination / "model_card.json").read_text())
    assert card["costs"]["machine"] == report.machine
    assert [entry["format"] for entry in card["costs"]["entries"]] == list(FORMATS)


def test_a_cost_that_cannot_be_measured_is_recorded_not_raised(tmp_path):
    from tlstudio.core.use.export_costs import measure_one

    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx model")
    cost = measure_one("onnx", broken, 32, runs=3)
    assert cost.size_bytes == len(b"not an onnx model")
    assert cost.latency_median_ms is None and "failed" in cost.error
