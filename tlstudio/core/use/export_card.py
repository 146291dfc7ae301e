"""The model card (``model_card.json``): what the model is, every rule for feeding it, how each artifact did.

The card is enough to reproduce the app's numbers without TL Studio: its
``input.rules`` spell out how an image file becomes the model's input, step
by step, as :func:`tlstudio.core.data.images.load_rgb` does it.
"""

from __future__ import annotations

import dataclasses
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from tlstudio.core.spec import anatomy
from tlstudio.core.spec.errors import UserError
from tlstudio.core.spec.text import tlstudio_version
from tlstudio.core.train.runs import Run
from tlstudio.core.use.evaluation import load_evaluations
from tlstudio.core.use.export_calibration import ImageSet
from tlstudio.core.use.export_costs import ArtifactCost
from tlstudio.core.use.export_formats import INPUT_NAME, OUTPUT_NAME
from tlstudio.core.use.export_verify import (
    ACCURACY_TOLERANCE,
    FLOAT_TOLERANCE,
    MIN_AGREEMENT,
    ArtifactCheck,
)

LABELS_FILE = "labels.txt"
MODEL_CARD_FILE = "model_card.json"
MODEL_CARD_VERSION = 2

PREPROCESSING_DESCRIPTIONS = {
    "caffe": "RGB to BGR, then minus the ImageNet channel means (103.939, 116.779, 123.68), as VGG expects",
    "lite": "(x - 127) / 128, as EfficientNet-Lite expects",
    "none": "none: the base model's own layers take raw pixels",
}


def input_rules(size: int) -> list[str]:
    """How an image file becomes the model's input, in order (what ``load_rgb`` does)."""
    return [
        "Decode with Pillow, recognising the format by content (JPEG, PNG, BMP, GIF, WEBP, TIFF); "
        "animated files: the first frame.",
        f"JPEG only: decode in Pillow's draft mode, image.draft(None, ({size}, {size})), which lets the decoder "
        f"shrink by 1/2, 1/4 or 1/8 while staying at least {size}x{size}.",
        "Read the EXIF orientation tag (0x0112) and rotate or mirror the image upright after the colour "
        "conversion (orientations 2-8, as Pillow's ImageOps.exif_transpose).",
        "Transparency (RGBA, LA, PA, or a palette or greyscale image with a transparent colour) is composited "
        "on white (255, 255, 255) with Pillow's alpha_composite, then the alpha is dropped.",
        "Greyscale (L) and 1-bit images repeat their grey level in R, G and B; palette (P) images take their "
        "palette's colours; CMYK uses Pillow's CMYK to RGB conversion; 16-bit greyscale is scaled by 255/65535.",
        f"Resize the whole image to {size}x{size} with Pillow's BILINEAR filter (Image.resize, which widens the "
        "filter when shrinking): the aspect ratio is not kept and nothing is cropped.",
        "Pixels as float32 RGB 0..255, NHWC, a batch axis first: shape (N, "
        f"{size}, {size}, 3). No scaling or mean subtraction: that is inside the model.",
        "int8 TFLite only: quantise the input as q = round(x / scale + zero_point), clipped to 0..255, with the "
        "input tensor's scale and zero point; dequantise the output as (q - zero_point) * scale.",
    ]


def model_card(
    run: Run,
    model,
    artifacts: dict[str, Path],
    checks: Sequence[ArtifactCheck],
    costs: Sequence[ArtifactCost] = (),
    machine: str = "",
    calibration: ImageSet | None = None,
    scripts: Sequence[str] = (),
) -> dict:
    """The ``model_card.json`` content: a JSON-ready description of the exported model."""
    import keras
    import tensorflow as tf

    recipe = run.recipe
    size = int(model.input_shape[1])
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
            "resize": f"the whole image to {size}x{size}, Pillow BILINEAR, aspect ratio not kept, no crop",
            "alpha": "composited on white",
            "exif_orientation": "applied",
            "greyscale_and_palette": "converted to RGB",
            "rules": input_rules(size),
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
        "example_scripts": list(scripts),
        "check_rules": {
            "float": f"every probability within {FLOAT_TOLERANCE:g} of the in-app model",
            "quantised": f"the 95% Wilson interval of top-1 agreement reaches {MIN_AGREEMENT:.0%}, and the accuracy "
            f"drop is at most {ACCURACY_TOLERANCE:.0%} (one image on sets under 100 labelled images)",
        },
        "round_trip": [_check_entry(check) for check in checks],
        "warnings": [
            f"{check.format} ({check.path.name}) {check.status.upper()}: {check.message}"
            for check in checks if not check.passed
        ],
        "versions": {
            "tlstudio": tlstudio_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    if "tflite-int8" in artifacts:
        card["int8_quantisation"] = _int8_io(artifacts["tflite-int8"])
    if calibration is not None:
        card["calibration"] = {"images": len(calibration.images), "per_class": calibration.per_class,
                               "source": calibration.note, "weights": "per channel", "activations": "per tensor"}
    if costs:
        card["costs"] = {"machine": machine, "entries": [dataclasses.asdict(cost) for cost in costs]}
    evaluations = _evaluation_summaries(run)
    if evaluations:
        card["evaluation"] = evaluations
    return card


def _check_entry(check: ArtifactCheck) -> dict:
    return {
        "format": check.format,
        "status": check.status,
        "passed": check.passed,
        "max_abs_diff": check.max_abs_diff,
        "top1_agreement": check.top1_agreement,
        "agreement_interval_95": list(check.agreement_interval),
        "images": check.images,
        "accuracy": check.accuracy,
        "in_app_accuracy": check.reference_accuracy,
        "labelled_images": check.labelled,
        "badly_quantised_layers": list(check.bad_layers),
        "message": check.message,
    }


def _int8_io(path: Path) -> dict:
    """The int8 model's input and output quantisation: real = (q - zero_point) * scale."""
    from tlstudio.core.use.export_runtime import tflite_interpreter

    interpreter = tflite_interpreter(path)
    result = {}
    for side, details in (("input", interpreter.get_input_details()), ("output", interpreter.get_output_details())):
        scale, zero_point = details[0]["quantization"]
        result[side] = {"dtype": np.dtype(details[0]["dtype"]).name, "scale": float(scale), "zero_point": int(zero_point)}
    return result


def _evaluation_summaries(run: Run) -> dict[str, dict]:
    """The metrics of the run's saved evaluations, by split ("val", "test"); none when it has none
    or its ``evaluation.json`` cannot be read (the export does not depend on it)."""
    try:
        return {split: evaluation.summary() for split, evaluation in load_evaluations(run.path).items()}
    except UserError:
        return {}


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
