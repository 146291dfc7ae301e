"""Export a run's classifier for use outside TL Studio, and prove the copies agree.

One export is a folder holding the chosen artifacts, ``labels.txt`` (one class
name per line, in output order) and ``model_card.json`` (what the model is,
how to feed it, how well it did, and the round-trip results):

============== ======================== =====================================
format         artifact                 input
============== ======================== =====================================
keras          ``model.keras``          Keras 3 model, input ``image``
savedmodel     ``saved_model/``         signature ``serving_default``:
                                        ``image`` → ``probabilities``
tflite         ``model.tflite``         float32, signature as SavedModel
tflite-int8    ``model_int8.tflite``    uint8 in and out, full-integer ops
onnx           ``model.onnx``           ``image`` → ``probabilities``
============== ======================== =====================================

Every artifact takes raw RGB pixels 0..255 as float32 (uint8 for int8 TFLite)
in NHWC layout at the model's input size: the preprocessing is a layer inside
the model, so no one has to repeat it by hand.

After writing, the same validation images go through every artifact and the
in-app model (on the CPU, so GPU TF32 arithmetic does not blur the
comparison). Float artifacts must agree within 1e-4 on every probability;
the int8 model must pick the same top class for at least 95% of images.

The export is built in a hidden temporary folder beside the destination and
renamed into place at the end, so a destination is either complete or absent;
an existing destination is only replaced with ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import platform
import shutil
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tlstudio.core.spec import anatomy
from tlstudio.core.spec.text import tlstudio_version
from tlstudio.core.spec.errors import Cancelled, DataError, ExportError, ImageError, UserError
from tlstudio.core.use.destination import check_destination
from tlstudio.core.use.evaluation import load_evaluations
from tlstudio.core.spec.events import Message, OnEvent, Progress, ShouldStop, ignore_event, never_stop
from tlstudio.core.train.runs import Run, load_run

FORMATS = ("keras", "savedmodel", "tflite", "tflite-int8", "onnx")
DEFAULT_FORMATS = ("keras", "savedmodel", "tflite", "onnx")

ARTIFACT_NAMES = {
    "keras": "model.keras",
    "savedmodel": "saved_model",
    "tflite": "model.tflite",
    "tflite-int8": "model_int8.tflite",
    "onnx": "model.onnx",
}
LABELS_FILE = "labels.txt"
MODEL_CARD_FILE = "model_card.json"
MODEL_CARD_VERSION = 1

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
SIGNATURE = "serving_default"

FLOAT_TOLERANCE = 1e-4
"""Largest difference in any probability allowed between a float artifact and the in-app model."""
INT8_MIN_AGREEMENT = 0.95
"""Share of images on which the int8 model must pick the in-app model's top class."""
CHECK_IMAGES = 32
"""Validation images run through every artifact (enough to catch a broken export, quick on a CPU)."""
GENERATED_CHECK_IMAGES = 8
REPRESENTATIVE_IMAGES = 100
"""Training images used to calibrate int8 quantisation ranges."""
ONNX_OPSET = 15

PREPROCESSING_DESCRIPTIONS = {
    "caffe": "RGB to BGR, then minus the ImageNet channel means (103.939, 116.779, 123.68), as VGG expects",
    "lite": "(x - 127) / 128, as EfficientNet-Lite expects",
    "none": "none: the base model's own layers take raw pixels",
}


@dataclass(frozen=True)
class ArtifactCheck:
    """The round-trip result of one artifact against the in-app model.

    ``max_abs_diff`` is the largest probability difference over the check
    images (None when the artifact could not be run); ``top1_agreement`` the
    share of images with the same top class.
    """

    format: str
    path: Path
    max_abs_diff: float | None
    top1_agreement: float
    passed: bool
    message: str


@dataclass(frozen=True)
class ExportReport:
    """Where an export went, what it holds (format → artifact path) and how its checks went."""

    destination: Path
    artifacts: dict[str, Path]
    checks: tuple[ArtifactCheck, ...]

    @property
    def passed(self) -> bool:
        """Whether every artifact agreed with the in-app model."""
        return all(check.passed for check in self.checks)


def export_run(
    run: Run | str | os.PathLike[str],
    destination: str | os.PathLike[str],
    formats: Sequence[str] = DEFAULT_FORMATS,
    overwrite: bool = False,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
) -> ExportReport:
    """Write the run's classifier to ``destination`` in ``formats``, check every artifact, report.

    ``run`` is a :class:`~tlstudio.core.train.runs.Run` or its folder. ``tflite-int8``
    needs the run's training images (named in its recipe) for calibration.
    Raises ExportError for unknown formats, an existing destination without
    ``overwrite``, an unwritable destination or a failed conversion;
    Cancelled when ``should_stop()`` turns true. Failed round-trip checks do
    not raise: they are in the report (``report.passed``).
    """
    chosen = _validate_formats(formats)
    if not isinstance(run, Run):
        run = load_run(run)
    target = Path(destination).expanduser().absolute()
    _refuse_existing(target, overwrite, (run.path,))

    model = run.load_model()
    input_size = _input_size(model)
    if model.output_shape[-1] != len(run.classes):
        raise ExportError(
            f"The run's model has {model.output_shape[-1]} outputs but the run lists {len(run.classes)} classes "
            f"({', '.join(run.classes)}); its folder {str(run.path)!r} is inconsistent. Train again."
        )
    dataset, missing = _scan(run, should_stop)
    check_images, images_note = _check_images(dataset, missing, input_size, on_event)
    representative = _training_images(run, dataset, missing, input_size) if "tflite-int8" in chosen else None

    steps = 2 * len(chosen) + 3
    progress = _Progress(on_event, should_stop, steps)
    staging = _make_staging(target)
    try:
        artifacts = _write_artifacts(model, staging, chosen, input_size, representative, progress)
        progress.step("Writing labels.txt")
        _write_text(staging / LABELS_FILE, "".join(f"{name}\n" for name in run.classes))
        checks = _check_artifacts(model, artifacts, check_images, images_note, progress)
        progress.step("Writing model_card.json")
        card = model_card(run, model, artifacts, checks)
        _write_text(staging / MODEL_CARD_FILE, json.dumps(card, indent=2) + "\n")
        progress.step("Moving the export into place")
        _refuse_existing(target, overwrite, (run.path,))
        _publish(staging, target, overwrite)
    except OSError as error:
        raise _write_error(target, error) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    on_event(Progress("export", steps, steps, f"Exported to {target}"))
    for check in checks:
        if not check.passed:
            on_event(Message(f"Round-trip check failed for {check.format}: {check.message}", "warning"))
    return ExportReport(
        destination=target,
        artifacts={fmt: target / path.name for fmt, path in artifacts.items()},
        checks=tuple(dataclasses.replace(c, path=target / c.path.name) for c in checks),
    )


def model_card(run: Run, model, artifacts: dict[str, Path], checks: Sequence[ArtifactCheck]) -> dict:
    """The ``model_card.json`` content: a JSON-ready description of the exported model."""
    import keras
    import tensorflow as tf

    recipe = run.recipe
    size = _input_size(model)
    mode = _preprocessing_mode(model)
    card = {
        "tlstudio_model_card": MODEL_CARD_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": str(run.path),
        "classes": list(run.classes),
        "labels_file": LABELS_FILE,
        "input": {
            "name": INPUT_NAME,
            "shape": [None, size, size, 3],
            "dtype": "float32 (uint8 for the int8 TFLite model)",
            "layout": "NHWC",
            "colour": "RGB",
            "range": [0, 255],
            "resize": f"the whole image to {size}x{size}, bilinear",
        },
        "output": {"name": OUTPUT_NAME, "shape": [None, len(run.classes)], "meaning": "class probabilities (softmax)"},
        "preprocessing": {
            "mode": mode,
            "description": PREPROCESSING_DESCRIPTIONS.get(mode, "the model's own layers") if mode else "the model's own layers",
            "inside_model": True,
        },
        "base_model": dataclasses.asdict(recipe.base),
        "cut_tensor": recipe.cut_tensor or _cut_tensor(model),
        "head": _lists(dataclasses.asdict(recipe.head)),
        "training": _lists(dataclasses.asdict(recipe.training)),
        "metrics": dict(run.metrics),
        "artifacts": {fmt: path.name for fmt, path in artifacts.items()},
        "round_trip": [
            {
                "format": c.format,
                "max_abs_diff": c.max_abs_diff,
                "top1_agreement": c.top1_agreement,
                "passed": c.passed,
                "message": c.message,
            }
            for c in checks
        ],
        "versions": {
            "tlstudio": tlstudio_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    evaluations = _evaluation_summaries(run)
    if evaluations:
        card["evaluation"] = evaluations
    return card


def _evaluation_summaries(run: Run) -> dict[str, dict]:
    """The metrics of the run's saved evaluations, by split ("val", "test"); none when it has none
    or its ``evaluation.json`` cannot be read (the export does not depend on it)."""
    try:
        return {split: evaluation.summary() for split, evaluation in load_evaluations(run.path).items()}
    except UserError:
        return {}


class _Progress:
    """Counts export steps, reports them and stops between them when asked."""

    def __init__(self, on_event: OnEvent, should_stop: ShouldStop, total: int) -> None:
        self._on_event = on_event
        self._should_stop = should_stop
        self._total = total
        self._done = 0

    def step(self, message: str) -> None:
        if self._should_stop():
            raise Cancelled("Export cancelled.")
        self._on_event(Progress("export", self._done, self._total, message))
        self._done += 1


def _validate_formats(formats: Sequence[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [part.strip() for part in formats.split(",") if part.strip()]
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise ExportError(
            f"Unknown export format. Expected one or more of {', '.join(FORMATS)}. "
            f"Received: formats={list(formats)!r}"
        )
    return tuple(fmt for fmt in FORMATS if fmt in formats)


def _refuse_existing(target: Path, overwrite: bool, protected: Sequence[Path] = ()) -> None:
    """Refuse a destination that is not absent, empty or an earlier export (see :mod:`destination`)."""
    check_destination(target, overwrite, protected)


def _input_size(model) -> int:
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise ExportError(
            "Only models taking square RGB images of a fixed size can be exported "
            f"(input shape (None, N, N, 3)). Received: input shape {shape}"
        )
    return int(shape[1])


def _make_staging(target: Path) -> Path:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.export-", dir=target.parent))
    except OSError as error:
        raise _write_error(target, error) from None


def _publish(staging: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished export into place; an old one is swapped out only then."""
    if not (overwrite and target.exists()):
        try:
            os.rename(staging, target)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                _refuse_existing(target, overwrite=False)
            raise
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_error(target: Path, error: OSError) -> ExportError:
    hints = {
        errno.ENOSPC: "the disk is full; free some space or choose another disk",
        errno.EDQUOT: "the disk quota is exceeded; free some space or choose another disk",
        errno.EACCES: "permission denied; choose a folder you can write to",
        errno.EPERM: "permission denied; choose a folder you can write to",
        errno.EROFS: "the disk is read-only; choose a folder you can write to",
    }
    reason = error.strerror or str(error)
    hint = hints.get(error.errno, "choose a folder you can write to, on a disk with free space")
    return ExportError(f"Cannot write the export to {str(target)!r}: {reason} ({hint}).")


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _write_artifacts(
    model,
    staging: Path,
    formats: tuple[str, ...],
    input_size: int,
    representative: np.ndarray | None,
    progress: _Progress,
) -> dict[str, Path]:
    """Write each artifact into ``staging``; the TFLite models come from the SavedModel."""
    artifacts: dict[str, Path] = {}
    saved_model: Path | None = None
    for fmt in formats:
        progress.step(f"Writing {ARTIFACT_NAMES[fmt]}")
        path = staging / ARTIFACT_NAMES[fmt]
        if fmt == "keras":
            _convert(fmt, lambda: model.save(path))
        elif fmt == "savedmodel":
            _convert(fmt, lambda: _save_signature(model, path, input_size))
            saved_model = path
        elif fmt in ("tflite", "tflite-int8"):
            if saved_model is None:
                saved_model = staging / ".work" / ARTIFACT_NAMES["savedmodel"]
                _convert("savedmodel", lambda: _save_signature(model, saved_model, input_size))
            data = representative if fmt == "tflite-int8" else None
            content = _convert(fmt, lambda: _tflite_bytes(saved_model, data))
            path.write_bytes(content)
        else:
            _convert(fmt, lambda: _save_onnx(model, path, input_size))
        artifacts[fmt] = path
    shutil.rmtree(staging / ".work", ignore_errors=True)
    return artifacts


def _convert(fmt: str, write: Callable):
    """Run one conversion; disk errors propagate as OSError, anything else is an ExportError."""
    import tensorflow as tf

    try:
        return write()
    except OSError:
        raise
    except tf.errors.OpError as error:
        raise ExportError(f"Cannot write the {fmt} artifact: {error.message}") from error
    except (ExportError, Cancelled):
        raise
    except Exception as error:
        raise ExportError(
            f"Cannot convert the model to {fmt}: {type(error).__name__}: {error}. "
            "Export the other formats, or report this with the model card."
        ) from error


def _save_signature(model, path: Path, input_size: int) -> None:
    """A SavedModel whose ``serving_default`` takes ``image`` and returns ``probabilities``."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SIGNATURE,
        lambda image: {OUTPUT_NAME: model(image, training=False)},
        input_signature=[tf.TensorSpec((None, input_size, input_size, 3), tf.float32, name=INPUT_NAME)],
    )
    archive.write_out(str(path), verbose=False)


def _tflite_bytes(saved_model: Path, representative: np.ndarray | None) -> bytes:
    """Float32 TFLite, or full-integer (uint8 in and out) when calibration images are given."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[SIGNATURE])
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter.convert()


def _save_onnx(model, path: Path, input_size: int) -> None:
    """ONNX with input ``image`` and output ``probabilities``."""
    import onnx
    import tensorflow as tf

    spec = tf.TensorSpec((None, input_size, input_size, 3), tf.float32, name=INPUT_NAME)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model.export(str(path), format="onnx", verbose=False, input_signature=[spec], opset_version=ONNX_OPSET)
    proto = onnx.load(str(path))
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [OUTPUT_NAME if name == old else name for name in node.output]
        node.input[:] = [OUTPUT_NAME if name == old else name for name in node.input]
    proto.graph.output[0].name = OUTPUT_NAME
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _scan(run: Run, should_stop: ShouldStop):
    """The run's dataset, split as in training (same folders, fraction and seed), or why not.

    Returns ``(dataset, "")`` or ``(None, reason)``: missing images only
    matter to the steps that need them.
    """
    from tlstudio.core.data.dataset import scan_data_spec

    if not run.recipe.data.folders:
        return None, "the run's recipe names no data folders."
    try:
        return scan_data_spec(run.recipe.data, should_stop=should_stop), ""
    except DataError as error:
        return None, str(error)


def _check_images(dataset, missing: str, input_size: int, on_event: OnEvent) -> tuple[np.ndarray, str]:
    """Images of the run's data for the round trip, or generated ones (said so) when they are gone.

    Validation images come first; a small validation split is topped up with
    training images so that the int8 agreement is not judged on a handful.
    """
    if dataset is not None:
        val = _load_items(dataset.val, input_size, CHECK_IMAGES)
        train = _load_items(dataset.train, input_size, CHECK_IMAGES - len(val))
        if val or train:
            note = f"{len(val)} validation images" + (f" and {len(train)} training images" if train else "")
            return np.stack(val + train), note
        missing = "none of them can be read."
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (GENERATED_CHECK_IMAGES, input_size, input_size, 3)).astype(np.float32)
    note = f"{len(images)} generated random images (the run's images are not available: {missing})"
    on_event(Message(f"Round-trip check uses {note}", "warning"))
    return images, note


def _training_images(run: Run, dataset, missing: str, input_size: int) -> np.ndarray:
    """Calibration images for int8 quantisation; ExportError when the training images are gone."""
    images = _load_items(dataset.train, input_size, REPRESENTATIVE_IMAGES) if dataset is not None else []
    if not images:
        raise ExportError(
            "The int8 TFLite model needs the run's training images to calibrate its value ranges, "
            f"and they cannot be read: {missing or 'none of them can be read.'} Make the data folders "
            f"available again ({', '.join(run.recipe.data.folders) or 'none recorded'}), "
            "or export without tflite-int8."
        )
    return np.stack(images)


def _load_items(items, input_size: int, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` decoded float32 images; unreadable ones are passed over."""
    from tlstudio.core.data.images import load_rgb

    images: list[np.ndarray] = []
    for item in items:
        if len(images) >= limit:
            break
        try:
            images.append(load_rgb(item.path, input_size).astype(np.float32))
        except ImageError:
            continue
    return images


def _check_artifacts(
    model,
    artifacts: dict[str, Path],
    images: np.ndarray,
    images_note: str,
    progress: _Progress,
) -> list[ArtifactCheck]:
    """Run ``images`` through each artifact and compare with the in-app model."""
    import tensorflow as tf

    with tf.device("/CPU:0"):
        reference = np.asarray(model(images, training=False), dtype=np.float32)
    runners = {
        "keras": _run_keras,
        "savedmodel": _run_saved_model,
        "tflite": _run_tflite,
        "tflite-int8": _run_tflite,
        "onnx": _run_onnx,
    }
    checks = []
    for fmt, path in artifacts.items():
        progress.step(f"Checking {path.name}")
        try:
            with tf.device("/CPU:0"):
                outputs = np.asarray(runners[fmt](path, images), dtype=np.float32)
        except (Cancelled, OSError):
            raise
        except Exception as error:
            checks.append(
                ArtifactCheck(fmt, path, None, 0.0, False, f"could not run the artifact: {type(error).__name__}: {error}")
            )
            continue
        checks.append(_compare(fmt, path, reference, outputs, images_note))
    return checks


def _compare(fmt: str, path: Path, reference: np.ndarray, outputs: np.ndarray, images_note: str) -> ArtifactCheck:
    if outputs.shape != reference.shape:
        return ArtifactCheck(
            fmt, path, None, 0.0, False, f"output shape {outputs.shape} differs from the model's {reference.shape}"
        )
    diff = float(np.max(np.abs(outputs - reference)))
    agreement = float(np.mean(np.argmax(outputs, axis=1) == np.argmax(reference, axis=1)))
    if fmt == "tflite-int8":
        passed = agreement >= INT8_MIN_AGREEMENT
        rule = f"same top-1 on {agreement:.0%} (needs {INT8_MIN_AGREEMENT:.0%}), max abs difference {diff:.3g}"
    else:
        passed = diff <= FLOAT_TOLERANCE
        rule = f"max abs difference {diff:.2e} (allowed {FLOAT_TOLERANCE:.0e}), same top-1 on {agreement:.0%}"
    return ArtifactCheck(fmt, path, diff, agreement, passed, f"{rule}, over {images_note}")


def _run_keras(path: Path, images: np.ndarray) -> np.ndarray:
    import keras

    import tlstudio.core.model.preprocess  # noqa: F401  registers the Preprocess layer for loading

    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    return loaded(images, training=False)


def _run_saved_model(path: Path, images: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    return signature(**{INPUT_NAME: tf.constant(images)})[OUTPUT_NAME].numpy()


def _run_tflite(path: Path, images: np.ndarray) -> np.ndarray:
    """Run a TFLite model image by image, quantising input and output when it is integer."""
    interpreter = tflite_interpreter(path)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    sink = interpreter.get_output_details()[0]
    outputs = []
    for image in images:
        batch = image[None]
        scale, zero_point = source["quantization"]
        if np.issubdtype(source["dtype"], np.integer):
            limits = np.iinfo(source["dtype"])
            batch = np.clip(np.round(batch / scale + zero_point), limits.min, limits.max)
        interpreter.set_tensor(source["index"], batch.astype(source["dtype"]))
        interpreter.invoke()
        result = interpreter.get_tensor(sink["index"]).astype(np.float32)
        scale, zero_point = sink["quantization"]
        if np.issubdtype(sink["dtype"], np.integer):
            result = (result - zero_point) * scale
        outputs.append(result[0])
    return np.stack(outputs)


def tflite_interpreter(path: str | os.PathLike[str]):
    """A TFLite interpreter: LiteRT's when installed, else TensorFlow's (deprecated in TF 2.20+)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return tf.lite.Interpreter(model_path=str(path))
    return Interpreter(model_path=str(path))


def _run_onnx(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def _preprocessing_mode(model) -> str | None:
    """The mode of the model's Preprocess layer, None when it has none."""
    for layer in model.layers:
        if type(layer).__name__ == "Preprocess":
            return layer.get_config().get("mode")
    return None


def _cut_tensor(model) -> str | None:
    """The cut tensor of a TL Studio classifier: the output of its nested ``base`` model."""
    base = anatomy.nested_base(model)
    return f"{base.layers[-1].name}:0" if base is not None and base.layers else None


def _lists(value):
    if isinstance(value, dict):
        return {key: _lists(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(item) for item in value]
    return value

