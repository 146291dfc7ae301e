"""Which layers quantise badly: TFLite's quantisation debugger, compared layer by layer.

The debugger runs the float and the int8 model side by side on a few
calibration images and records, for every quantised tensor, the root mean
square error of the int8 values against the float ones. Divided by the
tensor's quantisation step (``scale``) it says how many steps off the layer
typically is; above :data:`BAD_RMSE_PER_SCALE` (0.7, as in TensorFlow's
debugger guide) a layer quantises badly and is worth keeping in float
(or use ``tflite-fp16``).
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path

import numpy as np

BAD_RMSE_PER_SCALE = 0.7
DEBUG_IMAGES = 16
"""Calibration images the debugger compares on (it runs both models on each, layer by layer)."""
MAX_REPORTED = 5


def badly_quantised_layers(saved_model: Path, calibration: np.ndarray) -> tuple[str, ...]:
    """The worst layers (at most :data:`MAX_REPORTED`) whose int8 error exceeds the threshold,
    as "op name (tensor) rmse/scale X"; empty when none does or the debugger cannot run."""
    import tensorflow as tf

    from tlstudio.core.use.export_formats import SIGNATURE

    images = calibration[:DEBUG_IMAGES]
    if not len(images):
        return ()
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[SIGNATURE])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None].astype(np.float32)] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=lambda: ([image[None].astype(np.float32)] for image in images)
            )
            debugger.run()
        table = io.StringIO()
        debugger.layer_statistics_dump(table)
    except Exception:  # the verdict stands without the diagnosis; nothing the user can act on here
        return ()
    return worst_layers(table.getvalue())


def worst_layers(csv_text: str) -> tuple[str, ...]:
    """From the debugger's layer statistics (CSV), the layers over the threshold, worst first."""
    rows = []
    for row in csv.DictReader(io.StringIO(csv_text)):
        try:
            scale = float(row["scale"])
            ratio = math.sqrt(float(row["mean_squared_error"])) / scale if scale > 0 else math.inf
        except (KeyError, ValueError):
            continue
        if ratio > BAD_RMSE_PER_SCALE:
            rows.append((ratio, f"{row.get('op_name', '?')} ({row.get('tensor_name', '?')}) rmse/scale {ratio:.2f}"))
    rows.sort(key=lambda pair: -pair[0])
    return tuple(text for _, text in rows[:MAX_REPORTED])
