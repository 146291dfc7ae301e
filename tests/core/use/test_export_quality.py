"""Export quality: calibration from every class, the quantised verdict, and the shipped example scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from tlstudio.core.data.images import load_rgb
from tlstudio.core.data.samples import SAMPLE_CLASSES, make_sample_folders, sample_image
from tlstudio.core.use import export_calibration
from tlstudio.core.use.export import export_run
from tlstudio.core.use.export_calibration import ImageSet, stratified
from tlstudio.core.use.export_debug import worst_layers
from tlstudio.core.use.export_runtime import tflite_interpreter
from tlstudio.core.use.export_scripts import LOAD_IMAGE
from tlstudio.core.use.export_verify import accuracy_allowance, judge, wilson_interval
from test_export import tiny_classifier, write_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("quality")
    images_root = make_sample_folders(root / "images", per_class=14)
    paths = sorted(images_root.rglob("*.png"))
    images = np.stack([load_rgb(p, 32) for p in paths]).astype("float32")
    labels = np.array([SAMPLE_CLASSES.index(p.parent.name) for p in paths])
    model = tiny_classifier()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=8, batch_size=12, verbose=0)
    return write_run(root / "run", images_root, model)


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    destination = tmp_path_factory.mktemp("out") / "export"
    export_run(run_dir, destination, formats=("tflite", "tflite-int8", "onnx"), measure_costs=False)
    return destination


# ----- the statistics -----


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(30, 32)
    assert low == pytest.approx(0.7986, abs=1e-3) and high == pytest.approx(0.9827, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    narrow, wide = wilson_interval(940, 1000), wilson_interval(94, 100)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_accuracy_allowance_is_a_point_or_one_image():
    assert accuracy_allowance(1000) == pytest.approx(0.01)
    assert accuracy_allowance(20) == pytest.approx(0.05)
    assert accuracy_allowance(0) == pytest.approx(0.01)


def one_hot(indices, classes=3):
    out = np.full((len(indices), classes), 0.1, dtype=np.float32)
    out[np.arange(len(indices)), indices] = 0.8
    return out


def test_two_disagreements_in_32_are_noise_not_failure():
    reference_top = np.arange(32) % 3
    labels = reference_top.copy()
    int8_top = reference_top.copy()
    int8_top[[0, 1]] = (int8_top[[0, 1]] + 1) % 3  # 94% agreement, the case
    labels[[0, 1]] = int8_top[[0, 1]]  # ...and the int8 model happens to be right there
    check = judge("tflite-int8", Path("m.tflite"), one_hot(reference_top), one_hot(int8_top), labels, "32 images")
    assert check.passed and check.status == "passed", check.message
    assert check.top1_agreement == pytest.approx(30 / 32)


def test_a_broken_quantisation_is_not_recommended():
    rng = np.random.default_rng(0)
    reference_top = np.arange(200) % 3
    broken_top = rng.integers(0, 3, 200)
    check = judge("tflite-int8", Path("m.tflite"), one_hot(reference_top), one_hot(broken_top), reference_top, "x")
    assert not check.passed and check.status == "not recommended"
    assert check.agreement_interval[1] < 0.95
    assert check.accuracy < 0.5 and check.reference_accuracy == 1.0
    assert "NOT RECOMMENDED" in check.message and "accuracy drop" in check.message


def test_an_accuracy_drop_beyond_the_tolerance_fails_even_with_high_agreement():
    reference_top = np.zeros(1000, dtype=int)
    labels = reference_top.copy()
    quantised = reference_top.copy()
    quantised[:30] = 1  # 97% agreement (interval reaches 95%) but 3 points of accuracy lost
    check = judge("tflite-fp16", Path("m.tflite"), one_hot(reference_top), one_hot(quantised), labels, "x")
    assert check.agreement_interval[1] >= 0.95
    assert not check.passed and "accuracy drop 3.0%" in check.message


def test_float_formats_keep_the_1e4_rule():
    reference = one_hot(np.arange(10) % 3)
    unlabelled = np.full(10, -1)
    close = judge("onnx", Path("m.onnx"), reference, reference + 5e-5, unlabelled, "x")
    far = judge("onnx", Path("m.onnx"), reference, reference + 2e-4, unlabelled, "x")
    assert close.passed and not far.passed and far.status == "failed"
    assert close.accuracy is None


def test_debugger_statistics_name_the_bad_layers():
    table = (
        "op_name,tensor_idx,num_elements,stddev,mean_error,max_abs_error,mean_squared_error,scale,zero_point,tensor_name\n"
        "CONV_2D,3,100,0.1,0,0.1,0.0001,0.1,0,good\n"
        "CONV_2D,5,100,1,0,3,4.0,0.5,0,awful\n"
        "FULLY_CONNECTED,7,10,1,0,1,0.36,0.5,0,bad\n"
    )
    assert worst_layers(table) == ("CONV_2D (awful) rmse/scale 4.00", "FULLY_CONNECTED (bad) rmse/scale 1.20")


# ----- calibration -----


class Item:
    def __init__(self, path, label):
        self.path, self.label = path, label


def test_stratified_takes_every_class_in_turn():
    items = [Item(f"a{i}", 0) for i in range(50)] + [Item(f"b{i}", 1) for i in range(5)] + [Item("c", 2)]
    chosen = stratified(items, 9)
    labels = [item.label for item in chosen]
    assert labels[:3] == [0, 1, 2] and sorted(set(labels)) == [0, 1, 2]
    assert labels.count(1) == 4 and labels.count(2) == 1
    assert stratified(items, 9) == chosen  # reproducible
    assert len(stratified(items, 1000)) == len(items)


def test_calibration_uses_every_class_from_the_training_split(run_dir):
    from tlstudio.core.data.dataset import scan_data_spec
    from tlstudio.core.train.runs import load_run

    run = load_run(run_dir)
    dataset = scan_data_spec(run.recipe.data)
    calibration = export_calibration.calibration_set(dataset, run.classes, 32, limit=9)
    assert calibration.per_class == {name: 3 for name in SAMPLE_CLASSES}
    assert calibration.images.shape == (9, 32, 32, 3) and calibration.images.dtype == np.uint8
    val_paths = {item.path for item in dataset.val}
    first = stratified(dataset.train, 1)[0]
    assert first.path not in val_paths
    np.testing.assert_array_equal(calibration.images[0], load_rgb(first.path, 32))


def test_int8_weights_are_quantised_per_channel(exported):
    interpreter = tflite_interpreter(exported / "model_int8.tflite")
    interpreter.allocate_tensors()
    conv_weights = [
        t for t in interpreter.get_tensor_details()
        if t["dtype"] == np.int8 and len(t["shape"]) == 4 and t["shape"][0] == 8
    ]
    assert conv_weights, "no int8 convolution weights found"
    assert len(conv_weights[0]["quantization_parameters"]["scales"]) == 8


def test_broken_calibration_is_caught_and_the_rest_still_passes(run_dir, tmp_path, monkeypatch):
    real = export_calibration.calibration_set

    def black(*args, **kwargs) -> ImageSet:
        found = real(*args, **kwargs)
        return ImageSet(found.images * 0, found.labels, found.note, found.per_class)

    monkeypatch.setattr(export_calibration, "calibration_set", black)
    report = export_run(run_dir, tmp_path / "out", formats=("tflite", "tflite-int8"), measure_costs=False)
    checks = {check.format: check for check in report.checks}
    assert checks["tflite"].passed
    int8 = checks["tflite-int8"]
    assert int8.status == "not recommended" and "NOT RECOMMENDED" in int8.message
    assert "tflite-fp16" in int8.message
    assert int8.bad_layers and "rmse/scale" in int8.bad_layers[0]  # TFLite's quantisation debugger names them
    assert "layers that quantise badly" in int8.message
    assert not report.passed and report.failed == ()
    assert (tmp_path / "out" / "model_int8.tflite").is_file()  # kept: the user asked for it
    card = json.loads((tmp_path / "out" / "model_card.json").read_text())
    [entry] = [e for e in card["round_trip"] if e["format"] == "tflite-int8"]
    assert entry["status"] == "not recommended"
    assert any("tflite-int8" in warning and "NOT RECOMMENDED" in warning for warning in card["warnings"])


# ----- the example scripts -----


def exif_with_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def awkward_images(folder: Path) -> list[Path]:
    """Images that need every input rule: alpha, EXIF rotation, greyscale, palette with transparency, JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    wide = np.concatenate([sample_image(0, rng, 48), sample_image(2, rng, 48)], axis=1)  # 48x96
    alpha = np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (48, 1))[:, :, None]
    paths = {
        "transparent.png": lambda p: Image.fromarray(np.concatenate([wide, alpha], axis=2), "RGBA").save(p),
        "rotated.jpg": lambda p: Image.fromarray(wide).save(p, quality=90, exif=exif_with_orientation(6)),
        "rotated.png": lambda p: Image.fromarray(wide).save(p, exif=exif_with_orientation(8)),
        "grey.png": lambda p: Image.fromarray(wide).convert("L").save(p),
        "palette.png": lambda p: Image.fromarray(wide).convert("P").save(p, transparency=0),
        "big.jpg": lambda p: Image.fromarray(np.kron(wide, np.ones((4, 4, 1), dtype=np.uint8))).save(p),
    }
    written = []
    for name, save in paths.items():
        save(folder / name)
        written.append(folder / name)
    return written


MODES_AND_SAVES = {
    "RGBA": lambda a: Image.fromarray(np.concatenate([a, a[:, :, :1]], axis=2), "RGBA"),
    "LA": lambda a: Image.fromarray(a).convert("LA"),
    "L": lambda a: Image.fromarray(a).convert("L"),
    "1": lambda a: Image.fromarray(a).convert("1"),
    "P": lambda a: Image.fromarray(a).convert("P"),
    "CMYK": lambda a: Image.fromarray(a).convert("CMYK"),
    "I;16": lambda a: Image.fromarray((a[:, :, 0].astype(np.uint16) * 257)),
}


def test_the_scripts_decoder_is_load_rgb(tmp_path):
    namespace = {"np": np, "Image": Image}
    exec(LOAD_IMAGE, namespace)
    rng = np.random.default_rng(1)
    pixels = np.concatenate([sample_image(1, rng, 40), sample_image(3, rng, 40)], axis=0)  # 80x40
    files = awkward_images(tmp_path / "awkward")
    for mode, make in MODES_AND_SAVES.items():
        path = tmp_path / f"mode_{mode.replace(';', '')}.{'tiff' if mode == 'CMYK' else 'png'}"
        make(pixels).save(path)
        files.append(path)
    for orientation in range(1, 9):
        path = tmp_path / f"orient{orientation}.jpg"
        Image.fromarray(pixels).save(path, exif=exif_with_orientation(orientation))
        files.append(path)
    for path in files:
        for size in (32, 17):
            np.testing.assert_array_equal(namespace["load_image"](str(path), size), load_rgb(path, size), err_msg=path.name)


def app_probabilities(destination: Path, images: list[Path]) -> dict[str, dict[str, float]]:
    from tlstudio.core.use.predict import load_predictor, predict_files

    predictor = load_predictor(run_dir_of(destination))
    return {p.path: dict(p.top) for p in predict_files(predictor, images, top_k=len(predictor.classes))}


def run_dir_of(destination: Path) -> str:
    return json.loads((destination / "model_card.json").read_text())["run"]


def script_probabilities(script: Path, images: list[Path], *extra: str) -> dict[str, dict[str, float]]:
    done = subprocess.run(
        [sys.executable, str(script), *map(str, images), "--json", *extra],
        capture_output=True, text=True, timeout=300, cwd=script.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {r["path"]: dict(zip(result["labels"], r["probabilities"])) for r in result["results"]}


@pytest.mark.parametrize("script", ["predict_onnx.py", "predict_tflite.py"])
def test_shipped_script_reproduces_the_apps_probabilities(exported, tmp_path, script):
    images = awkward_images(tmp_path / "photos")
    source = (exported / script).read_text()
    imports = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"argparse", "json", "os", "sys", "numpy", "PIL", "onnxruntime"}
    expected = app_probabilities(exported, images)
    got = script_probabilities(exported / script, images)
    assert set(got) == set(expected)
    for path, probabilities in expected.items():
        for label, value in probabilities.items():
            assert abs(got[path][label] - value) <= 1e-4, (script, path, label, got[path][label], value)


def test_tflite_script_runs_the_int8_model_too(exported, tmp_path):
    images = awkward_images(tmp_path / "photos")[:2]
    from tlstudio.core.use.export_runtime import load_runner

    model = exported / "model_int8.tflite"
    got = script_probabilities(exported / "predict_tflite.py", images, "--model", str(model))
    run = load_runner("tflite-int8", model)  # how the export's own check runs the int8 model
    expected = run(np.stack([load_rgb(path, 32).astype(np.float32) for path in images]))
    labels = (exported / "labels.txt").read_text().split()
    for path, row in zip(images, expected):
        np.testing.assert_allclose([got[str(path)][label] for label in labels], row, atol=1e-6)
