"""Judge every exported artifact against the in-app model on the same images.

Float artifacts (keras, savedmodel, tflite, onnx) must match the in-app model
within :data:`FLOAT_TOLERANCE` on every probability. Quantised artifacts
(tflite-fp16, tflite-int8) differ by design, so they are judged on what a user
cares about:

* **top-1 agreement** with the in-app model, with its 95% Wilson interval: it
  must *support* :data:`MIN_AGREEMENT` (the interval's upper end reaches it;
  two disagreements in 32 images are noise, a broken model is far below);
* with labelled validation images, **accuracy** next to the in-app model's:
  the drop may be at most :data:`ACCURACY_TOLERANCE` (1 point), or one image
  when the labelled set has fewer than 100 images (a single image is then more
  than a point).

A quantised artifact that misses either rule is kept (the user asked for it)
and marked "not recommended"; it does not fail the other formats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tlstudio.core.spec.errors import Cancelled
from tlstudio.core.use.export_calibration import ImageSet
from tlstudio.core.use.export_formats import QUANTISED_FORMATS
from tlstudio.core.use.export_runtime import load_runner

FLOAT_TOLERANCE = 1e-4
"""Largest difference in any probability allowed between a float artifact and the in-app model."""
MIN_AGREEMENT = 0.95
"""Top-1 agreement a quantised artifact's 95% interval must reach."""
ACCURACY_TOLERANCE = 0.01
"""Largest accuracy drop (1 point) allowed for a quantised artifact; one image on sets under 100 images."""
Z_95 = 1.959964


@dataclass(frozen=True)
class ArtifactCheck:
    """How one artifact compares with the in-app model.

    ``max_abs_diff`` is the largest probability difference (None when the
    artifact could not be run); ``top1_agreement`` the share of images with the
    same top class and ``agreement_interval`` its 95% Wilson interval over
    ``images``. ``accuracy`` and ``reference_accuracy`` (the in-app model's)
    are over the ``labelled`` validation images, None without labels.
    ``bad_layers`` names layers that quantise badly (only looked for when a
    quantised check fails).
    """

    format: str
    path: Path
    max_abs_diff: float | None
    top1_agreement: float
    passed: bool
    message: str
    agreement_interval: tuple[float, float] = (0.0, 1.0)
    images: int = 0
    accuracy: float | None = None
    reference_accuracy: float | None = None
    labelled: int = 0
    bad_layers: tuple[str, ...] = ()

    @property
    def quantised(self) -> bool:
        """Whether the artifact is judged by agreement and accuracy rather than the 1e-4 rule."""
        return self.format in QUANTISED_FORMATS

    @property
    def status(self) -> str:
        """"passed", "failed" (a float artifact, or one that could not run) or "not recommended"."""
        if self.passed:
            return "passed"
        return "not recommended" if self.quantised and self.max_abs_diff is not None else "failed"

    @property
    def accuracy_drop(self) -> float | None:
        if self.accuracy is None or self.reference_accuracy is None:
            return None
        return self.reference_accuracy - self.accuracy


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); (0, 1) for no trials."""
    if total <= 0:
        return 0.0, 1.0
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_allowance(labelled: int) -> float:
    """The accuracy drop a quantised artifact may show on ``labelled`` images."""
    return max(ACCURACY_TOLERANCE, 1.0 / labelled) if labelled else ACCURACY_TOLERANCE


def reference_outputs(model, images: np.ndarray) -> np.ndarray:
    """The in-app model's probabilities, on the CPU (GPU TF32 arithmetic would blur the comparison)."""
    import tensorflow as tf

    with tf.device("/CPU:0"):
        return np.concatenate(
            [np.asarray(model(images[i : i + 64].astype(np.float32), training=False), dtype=np.float32)
             for i in range(0, len(images), 64)]
        ) if len(images) else np.zeros((0, model.output_shape[-1]), dtype=np.float32)


def check_artifacts(
    model,
    artifacts: dict[str, Path],
    check: ImageSet,
    step: Callable[[str], None],
) -> list[ArtifactCheck]:
    """Run the check images through each artifact (on the CPU) and judge it against the in-app model."""
    import tensorflow as tf

    reference = reference_outputs(model, check.images)
    checks = []
    for fmt, path in artifacts.items():
        step(f"Checking {path.name} on {len(check.images)} images")
        try:
            with tf.device("/CPU:0"):
                run = load_runner(fmt, path)
                outputs = np.concatenate(
                    [np.asarray(run(check.images[i : i + 64].astype(np.float32)), dtype=np.float32)
                     for i in range(0, len(check.images), 64)]
                )
        except (Cancelled, OSError):
            raise
        except Exception as error:
            checks.append(
                ArtifactCheck(fmt, path, None, 0.0, False, f"could not run the artifact: {type(error).__name__}: {error}")
            )
            continue
        checks.append(judge(fmt, path, reference, outputs, check.labels, check.note))
    return checks


def judge(
    fmt: str, path: Path, reference: np.ndarray, outputs: np.ndarray, labels: np.ndarray, note: str
) -> ArtifactCheck:
    """The verdict on one artifact's ``outputs`` against the in-app model's ``reference``."""
    if outputs.shape != reference.shape:
        return ArtifactCheck(
            fmt, path, None, 0.0, False, f"output shape {outputs.shape} differs from the model's {reference.shape}"
        )
    count = len(reference)
    diff = float(np.max(np.abs(outputs - reference))) if count else 0.0
    same = int(np.sum(np.argmax(outputs, axis=1) == np.argmax(reference, axis=1)))
    agreement = same / count if count else 1.0
    interval = wilson_interval(same, count)
    known = labels >= 0
    labelled = int(np.sum(known))
    accuracy = reference_accuracy = None
    if labelled:
        accuracy = float(np.mean(np.argmax(outputs[known], axis=1) == labels[known]))
        reference_accuracy = float(np.mean(np.argmax(reference[known], axis=1) == labels[known]))
    agreement_text = f"same top-1 on {same}/{count} ({agreement:.1%}, 95% CI {interval[0]:.1%}-{interval[1]:.1%})"
    accuracy_text = (
        f"accuracy {accuracy:.1%} vs in-app {reference_accuracy:.1%} on {labelled} labelled images"
        if labelled else "no labelled images for accuracy"
    )
    if fmt in QUANTISED_FORMATS:
        allowance = accuracy_allowance(labelled)
        agreement_ok = interval[1] >= MIN_AGREEMENT
        accuracy_ok = accuracy is None or reference_accuracy - accuracy <= allowance + 1e-9
        passed = agreement_ok and accuracy_ok
        reasons = []
        if not agreement_ok:
            reasons.append(f"agreement interval below {MIN_AGREEMENT:.0%}")
        if not accuracy_ok:
            reasons.append(f"accuracy drop {reference_accuracy - accuracy:.1%} over the allowed {allowance:.1%}")
        verdict = "" if passed else "; NOT RECOMMENDED: " + ", ".join(reasons)
        message = f"{agreement_text}; {accuracy_text}; max abs difference {diff:.3g}{verdict}"
    else:
        passed = diff <= FLOAT_TOLERANCE
        message = f"max abs difference {diff:.2e} (allowed {FLOAT_TOLERANCE:.0e}); {agreement_text}"
    return ArtifactCheck(
        fmt, path, diff, agreement, passed, f"{message}; over {note}",
        agreement_interval=interval, images=count, accuracy=accuracy,
        reference_accuracy=reference_accuracy, labelled=labelled,
    )
