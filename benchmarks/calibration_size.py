"""How many calibration images does the int8 export need? Quality of int8 against calibration set size.

    python benchmarks/calibration_size.py RUN [--sizes 8,16,32,64,128,300]
    python benchmarks/calibration_size.py --quick     # a tiny generated run, under a minute

For each size the run's model is converted to int8 TFLite with that many
stratified training images (as the export does), then judged on the run's
validation images: top-1 agreement with the float model, accuracy against the
float model's, and the mean absolute difference in probabilities. More
images stop helping where the columns stop improving; the export's default
(``CALIBRATION_IMAGES``) sits past that point.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def tiny_run(folder: Path) -> Path:
    """A small trained run on generated images (the --quick case)."""
    import keras

    from tlstudio.core.data.images import load_rgb
    from tlstudio.core.data.samples import SAMPLE_CLASSES, make_sample_folders
    from tlstudio.core.spec.recipe import BaseSpec, DataSpec, Recipe, save_project

    images_root = make_sample_folders(folder / "images", per_class=60)
    paths = sorted(images_root.rglob("*.png"))
    images = np.stack([load_rgb(p, 32) for p in paths]).astype("float32")
    labels = np.array([SAMPLE_CLASSES.index(p.parent.name) for p in paths])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(len(SAMPLE_CLASSES), activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=10, batch_size=16, verbose=0)
    run = folder / "run"
    run.mkdir()
    recipe = Recipe(data=DataSpec(folders=(str(images_root),)), base=BaseSpec(name="vgg16", weights="none", input_size=32))
    save_project(recipe, run / "recipe.json")
    (run / "classes.json").write_text(json.dumps(list(SAMPLE_CLASSES)))
    (run / "history.json").write_text("{}")
    (run / "metrics.json").write_text("{}")
    model.save(run / "model.keras")
    return run


def measure(run_path: Path, sizes: list[int], work: Path) -> list[dict]:
    from tlstudio.core.data.dataset import scan_data_spec
    from tlstudio.core.train.runs import load_run
    from tlstudio.core.use.export_calibration import calibration_set, check_set
    from tlstudio.core.use.export_formats import save_signature, tflite_bytes
    from tlstudio.core.use.export_runtime import load_runner
    from tlstudio.core.use.export_verify import judge, reference_outputs

    run = load_run(run_path)
    model = run.load_model()
    size = int(model.input_shape[1])
    dataset = scan_data_spec(run.recipe.data)
    check = check_set(dataset, run.classes, size)
    reference = reference_outputs(model, check.images)
    saved_model = work / "saved_model"
    save_signature(model, saved_model, size)
    rows = []
    for count in sizes:
        calibration = calibration_set(dataset, run.classes, size, limit=count)
        started = time.perf_counter()
        path = work / f"int8_{count}.tflite"
        path.write_bytes(tflite_bytes(saved_model, "tflite-int8", calibration.images))
        seconds = time.perf_counter() - started
        outputs = load_runner("tflite-int8", path)(check.images.astype(np.float32))
        verdict = judge("tflite-int8", path, reference, outputs, check.labels, check.note)
        rows.append({
            "calibration_images": len(calibration.images),
            "agreement": verdict.top1_agreement,
            "accuracy": verdict.accuracy,
            "float_accuracy": verdict.reference_accuracy,
            "mean_abs_diff": float(np.mean(np.abs(outputs - reference))),
            "convert_s": seconds,
            "passed": verdict.passed,
        })
        print(json.dumps(rows[-1]), flush=True)
    print(f"judged on {check.note}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="a run folder")
    parser.add_argument("--sizes", default="8,16,32,64,128,300", help="calibration set sizes to try")
    parser.add_argument("--quick", action="store_true", help="a tiny generated run")
    args = parser.parse_args(argv)
    if not args.run and not args.quick:
        parser.error("give a run folder, or --quick")
    sizes = [int(part) for part in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        run = tiny_run(work) if args.quick else Path(args.run)
        measure(run, sizes, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
