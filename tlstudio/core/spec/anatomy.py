"""The classifier's anatomy: the names of its parts, in one place.

    image -> preprocess -> base (the cut base model, nested) -> head_* layers

Every module that looks inside a classifier (training, export, taps, the
feature cache, cut comparison, the app's summary) asks here instead of
matching names itself. No TensorFlow import: these are names and lookups.
"""

from __future__ import annotations

from typing import Any

CLASSIFIER_NAME = "classifier"
INPUT_NAME = "image"
PREPROCESS_NAME = "preprocess"
BASE_NAME = "base"
HEAD_PREFIX = "head_"
POOL_NAME = "head_pool"
FLATTEN_NAME = "head_flatten"
FEATURE_BN_NAME = "head_bn"
DROPOUT_NAME = "head_dropout"
PREDICTIONS_NAME = "head_predictions"
FLATTENING_NAMES = (POOL_NAME, FLATTEN_NAME)


def dense_name(index: int) -> str:
    """The ``index``-th hidden Dense layer (from 1)."""
    return f"head_dense_{index}"


def hidden_bn_name(index: int) -> str:
    """The batch norm after the ``index``-th hidden Dense layer."""
    return f"head_bn_{index}"


def relu_name(index: int) -> str:
    """The activation after the ``index``-th hidden layer's batch norm."""
    return f"head_relu_{index}"


def is_head_layer(layer: Any) -> bool:
    """Whether ``layer`` belongs to the head (the new layers on the cut tensor)."""
    return str(getattr(layer, "name", "")).startswith(HEAD_PREFIX)


def is_head_bn(layer: Any) -> bool:
    """Whether ``layer`` is named as one of the head's batch norms (``head_bn``, ``head_bn_N``)."""
    return str(getattr(layer, "name", "")).startswith(FEATURE_BN_NAME)


def head_layers(model: Any) -> list[Any]:
    """The head's layers of a classifier, in model order."""
    return [layer for layer in model.layers if is_head_layer(layer)]


def nested_base(model: Any) -> Any | None:
    """The nested base model of a classifier, or None when ``model`` has none."""
    import keras

    try:
        base = model.get_layer(BASE_NAME)
    except ValueError:
        return None
    return base if isinstance(base, keras.Model) else None
