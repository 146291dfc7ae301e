"""The example scripts shipped with each export: ``predict_onnx.py`` and ``predict_tflite.py``.

Each uses only its runtime, NumPy and Pillow, and decodes images exactly as
the app does (:func:`tlstudio.core.data.images.load_rgb`, the rules written in
the model card's ``input.rules``), so it reproduces the app's probabilities.
The shared decoding code is one string here; a test compares it with
``load_rgb`` pixel for pixel.
"""

from __future__ import annotations

from pathlib import Path

from tlstudio.core.use.export_formats import TFLITE_FORMATS

ONNX_SCRIPT = "predict_onnx.py"
TFLITE_SCRIPT = "predict_tflite.py"

LOAD_IMAGE = '''
EXIF_ORIENTATION = 0x0112
TRANSPOSITIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def load_image(path, size):
    """RGB uint8 pixels (size, size, 3) as the model card's input rules say."""
    with Image.open(path) as image:
        if image.format in ("JPEG", "MPO"):
            image.draft(None, (size, size))  # JPEG: decode at a reduced scale still >= size (DCT scaling)
        image.load()
        orientation = exif_orientation(image)
        rgb = to_rgb(image)
        if orientation in TRANSPOSITIONS:
            rgb = rgb.transpose(TRANSPOSITIONS[orientation])
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)  # whole image, aspect not kept
        return np.array(rgb, dtype=np.uint8)


def exif_orientation(image):
    if image.format != "TIFF" and not any(key in image.info for key in ("exif", "Raw profile type exif")):
        return 1
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def to_rgb(image):
    """Any colour mode to 8-bit RGB; transparency composited on white."""
    mode = image.mode
    if mode.startswith("I;16"):
        return grey_to_rgb(np.asarray(image, dtype=np.float64) * (255.0 / 65535.0))
    if mode == "I":
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) > 255:
            values = np.clip(values, 0, 65535) * (255.0 / 65535.0)
        return grey_to_rgb(values)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        return grey_to_rgb(values)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def grey_to_rgb(values):
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))
'''

_MAIN = '''

def read_labels(folder):
    with open(os.path.join(folder, "labels.txt"), encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--model", default=os.path.join(HERE, DEFAULT_MODEL), help="the model file")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image")
    parser.add_argument("--json", action="store_true", help="print every probability as JSON")
    args = parser.parse_args(argv)
    labels = read_labels(os.path.dirname(os.path.abspath(args.model)))
    predict, size = load_model(args.model)
    results = []
    for path in args.images:
        probabilities = predict(load_image(path, size).astype(np.float32)[None])[0]
        results.append({"path": path, "probabilities": [float(p) for p in probabilities]})
        if not args.json:
            order = np.argsort(-probabilities, kind="stable")[: args.top]
            print(path + ": " + ", ".join(f"{labels[i]} {probabilities[i]:.1%}" for i in order))
    if args.json:
        print(json.dumps({"labels": labels, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''

_HEADER = '''"""Classify images with {model} using only {runtime}, NumPy and Pillow.

Written by TL Studio with this export. It decodes each image as the app does
(see model_card.json, "input"), so it gives the app's probabilities.

    python {script} photo.jpg [more.png ...] [--model FILE] [--top K] [--json]
"""

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image
{imports}
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = "{model}"
'''

_ONNX_LOADER = '''

def load_model(path):
    """A function from float32 images (N, H, W, 3), RGB 0..255, to probabilities; and the input size."""
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    size = int(session.get_inputs()[0].shape[1])
    return (lambda images: session.run(["probabilities"], {"image": images})[0]), size
'''

_TFLITE_LOADER = '''

def interpreter_for(path):
    """LiteRT's interpreter, else tflite-runtime's, else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=path)


def load_model(path):
    """A function from float32 images (N, H, W, 3), RGB 0..255, to probabilities; and the input size.

    An int8 model's uint8 input and output are (de)quantised with their tensors' scale and zero point.
    """
    interpreter = interpreter_for(path)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    sink = interpreter.get_output_details()[0]

    def predict(images):
        outputs = []
        for image in images:
            batch = image[None]
            if np.issubdtype(source["dtype"], np.integer):
                scale, zero_point = source["quantization"]
                limits = np.iinfo(source["dtype"])
                batch = np.clip(np.round(batch / scale + zero_point), limits.min, limits.max)
            interpreter.set_tensor(source["index"], batch.astype(source["dtype"]))
            interpreter.invoke()
            result = interpreter.get_tensor(sink["index"]).astype(np.float32)
            if np.issubdtype(sink["dtype"], np.integer):
                scale, zero_point = sink["quantization"]
                result = (result - zero_point) * scale
            outputs.append(result[0])
        return np.stack(outputs)

    return predict, int(source["shape"][1])
'''


def onnx_script() -> str:
    """The text of ``predict_onnx.py``."""
    header = _HEADER.format(model="model.onnx", runtime="ONNX Runtime", script=ONNX_SCRIPT,
                            imports="import onnxruntime\n")
    return header + LOAD_IMAGE + _ONNX_LOADER + _MAIN


def tflite_script(model: str) -> str:
    """The text of ``predict_tflite.py`` for the TFLite file ``model`` (others with ``--model``)."""
    header = _HEADER.format(model=model, runtime="the TFLite interpreter", script=TFLITE_SCRIPT, imports="")
    return header + LOAD_IMAGE + _TFLITE_LOADER + _MAIN


def write_example_scripts(folder: Path, artifacts: dict[str, Path]) -> list[Path]:
    """Write the scripts that fit the exported formats into ``folder``; the paths written."""
    written = []
    if "onnx" in artifacts:
        written.append(_write(folder / ONNX_SCRIPT, onnx_script()))
    tflite = [fmt for fmt in TFLITE_FORMATS if fmt in artifacts]
    if tflite:
        written.append(_write(folder / TFLITE_SCRIPT, tflite_script(artifacts[tflite[0]].name)))
    return written


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
