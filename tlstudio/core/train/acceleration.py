"""Mixed precision and XLA: faster on GPUs that gain from them, unchanged elsewhere.

Mixed precision (``mixed_float16``: float16 computation, float32 variables)
roughly doubles convolution throughput on GPUs with tensor cores and halves
activation memory; on CPUs and older GPUs it is slower, so the policy follows
:func:`tlstudio.core.train.devices.mixed_precision_policy`. It must be in force
before the base model is built, because a Keras layer fixes its dtype policy
when it is created: call :func:`apply_policy` once at start-up, before any
model exists. The classifier stays correct under it: the preprocessing layer
and the final softmax compute in float32, so probabilities are float32, and
Keras wraps the optimizer in loss scaling when it compiles a mixed-precision
model.

XLA (``jit_compile``) fuses operations into fewer GPU kernels. Keras' own
``"auto"`` already turns it on when a GPU is visible and off on CPU-only
machines, where compilation costs more than it saves; :func:`jit_compile`
returns that unless ``TLSTUDIO_XLA`` overrides it (``0`` off, e.g. for an
operation XLA cannot compile; ``1`` on).

``TLSTUDIO_PRECISION`` (``float32``, ``mixed_float16`` or ``auto``) overrides
the policy. TensorFlow is imported inside the functions.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

from tlstudio.core.spec.errors import UserError

PRECISION_ENV = "TLSTUDIO_PRECISION"
XLA_ENV = "TLSTUDIO_XLA"
POLICIES = ("float32", "mixed_float16")


def choose_policy() -> str:
    """``"mixed_float16"`` or ``"float32"``: the environment's choice, else what the GPUs gain from."""
    raw = os.environ.get(PRECISION_ENV, "auto").strip().lower() or "auto"
    if raw == "auto":
        from tlstudio.core.train.devices import mixed_precision_policy

        return mixed_precision_policy()
    if raw not in POLICIES:
        raise UserError(
            f"{PRECISION_ENV} must be one of auto, {', '.join(POLICIES)}. Received: {PRECISION_ENV}={raw!r}"
        )
    return raw


def apply_policy(policy: str | None = None) -> str:
    """Make ``policy`` (default :func:`choose_policy`) Keras' global dtype policy; return it.

    Only models built afterwards use it.
    """
    import keras

    chosen = policy or choose_policy()
    keras.mixed_precision.set_global_policy(chosen)
    return chosen


@contextmanager
def dtype_policy(policy: str) -> Iterator[None]:
    """Build models under ``policy`` inside the block; the previous global policy comes back after."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def jit_compile() -> bool | str:
    """The ``jit_compile`` argument for ``Model.compile``: ``"auto"`` unless ``TLSTUDIO_XLA`` says 1 or 0."""
    raw = os.environ.get(XLA_ENV, "auto").strip().lower() or "auto"
    if raw == "auto":
        return "auto"
    if raw in ("1", "true", "on"):
        return True
    if raw in ("0", "false", "off"):
        return False
    raise UserError(f"{XLA_ENV} must be auto, 1 or 0. Received: {XLA_ENV}={raw!r}")


def configure_jit(model: Any) -> None:
    """Apply :func:`jit_compile` to a model used without ``compile`` (for ``predict``)."""
    setting = jit_compile()
    if setting != "auto":
        model.jit_compile = setting
