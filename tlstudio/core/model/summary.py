"""What a recipe's classifier holds: trainable and frozen parameters in each phase, and its head.

The app's live summary and any script ask the same question: build the
classifier the recipe describes and count what trains while the head
trains and while fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tlstudio.core import tf_compat
from tlstudio.core.spec import anatomy
from tlstudio.core.spec.recipe import HeadSpec


@dataclass(frozen=True)
class ModelSummary:
    """What the live summary shows, computed from a classifier built by the engine.

    ``trainable``/``frozen``: parameters while the head trains (base frozen).
    ``fine_tune_trainable``: parameters trained during fine-tuning, and
    ``fine_tuned_layers`` the base layers unfrozen then (empty when off).
    ``head_layers``: (name, type, params, note) for each layer of the head.
    """

    model: Any
    trainable: int
    frozen: int
    fine_tune_trainable: int
    fine_tuned_layers: tuple[str, ...]
    head_layers: tuple[tuple[str, str, int, str], ...]
    num_classes: int


def _count(weights: Any) -> int:
    return int(sum(int(np.prod(w.shape)) for w in weights))


def _note(layer: Any) -> str:
    if hasattr(layer, "use_bias") and hasattr(layer, "units"):
        return f"{layer.units} units, " + ("bias" if layer.use_bias else "no bias (batch norm follows)")
    if hasattr(layer, "rate"):
        return f"rate {layer.rate:g}"
    return ""


def build_summary(
    base: Any, cut_tensor: str, num_classes: int, head: HeadSpec, preprocessing: str,
    fine_tune_epochs: int, fine_tune_layers: int, fine_tune_from: str | None,
    on_event: Any = None, should_stop: Any = None,
) -> ModelSummary:
    """Build the classifier the recipe describes and count what trains in each phase.

    ``build_classifier`` and ``unfreeze_for_fine_tuning`` change the trainable
    flags of the base's layers (the cut shares them), so the flags are put
    back afterwards: the base model stays as it was. ``on_event`` and
    ``should_stop`` are accepted so it runs as a background job; it is quick
    and reports nothing.
    """
    from tlstudio.core.model.classifier import build_classifier, unfreeze_for_fine_tuning

    saved = [(layer, layer.trainable) for layer in tf_compat.all_layers(base)]
    try:
        model = build_classifier(base, cut_tensor, num_classes, head, preprocessing)
        trainable = _count(model.trainable_weights)
        frozen = _count(model.non_trainable_weights)
        head_layers = tuple(
            (layer.name, type(layer).__name__, layer.count_params(), _note(layer))
            for layer in anatomy.head_layers(model)
        )
        tuned: list[str] = []
        tune_trainable = 0
        if fine_tune_epochs > 0:
            tuned = unfreeze_for_fine_tuning(model, fine_tune_layers, fine_tune_from)
            tune_trainable = _count(model.trainable_weights)
        return ModelSummary(model, trainable, frozen, tune_trainable, tuple(tuned), head_layers, num_classes)
    finally:
        for layer, flag in saved:
            layer.trainable = flag
