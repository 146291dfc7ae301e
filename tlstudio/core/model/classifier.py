"""The model TL Studio trains: preprocessing, the cut base, the new head.

    image (raw RGB 0..255) -> Preprocess(mode) -> base (cut, frozen) -> head

The base is a nested model named ``base``, called with ``training=False`` so
its batch-norm layers always use their stored statistics, during head
training and fine-tuning alike. It starts frozen: only the head trains first.
The cut base shares its layers with the base model it was cut from, so
freezing or unfreezing one changes the other.
"""

from __future__ import annotations

import difflib

import keras

from tlstudio.core import tf_compat
from tlstudio.core.spec import anatomy
from tlstudio.core.spec.anatomy import BASE_NAME
from tlstudio.core.spec.errors import DataError, ModelFileError, RecipeError
from tlstudio.core.model.head import build_head
from tlstudio.core.spec.recipe import HeadSpec
from tlstudio.core.model.tensors import cut_model


def build_classifier(
    base: keras.Model, cut_tensor: str, num_classes: int, head: HeadSpec, preprocessing: str
) -> keras.Model:
    """A new classifier: ``base`` cut at ``cut_tensor``, frozen, with a head for ``num_classes``.

    The input, named ``image``, takes float32 RGB pixels 0..255 at the base's
    input size; ``preprocessing`` is the mode of :class:`Preprocess`
    ("caffe", "lite" or "none").
    """
    from tlstudio.core.model.preprocess import Preprocess

    if num_classes < 2:
        raise DataError(
            f"A classifier needs at least 2 classes to tell apart. Received: num_classes={num_classes!r}. "
            "Add a folder of images for another class."
        )
    shape = _image_shape(base)
    cut = cut_model(base, cut_tensor)
    nested = keras.Model(cut.inputs[0], cut.outputs[0], name=BASE_NAME)
    nested.trainable = False
    image = keras.Input(shape=shape, dtype="float32", name=anatomy.INPUT_NAME)
    x = Preprocess(preprocessing, name=anatomy.PREPROCESS_NAME)(image)
    features = nested(x, training=False)
    return keras.Model(image, build_head(features, num_classes, head), name=anatomy.CLASSIFIER_NAME)


def unfreeze_for_fine_tuning(model: keras.Model, layers: int = 4, from_layer: str | None = None) -> list[str]:
    """Make the last ``layers`` weighted layers of the base trainable, or every one from ``from_layer`` on.

    Everything else in the base is frozen again, and its batch-norm layers
    always stay frozen: their statistics were learnt on the original data and
    a few small batches would spoil them. Returns the names of the layers made
    trainable, in model order. Compile the model again before training.
    """
    base = _nested_base(model)
    weighted = [layer for layer in base.layers if layer.weights and not _is_batch_norm(layer)]
    if not weighted:
        raise RecipeError(f"The base model {base.name!r} has no layers with weights to fine-tune.")
    if from_layer is not None:
        chosen = _layers_from(base, weighted, from_layer)
    else:
        if layers < 1:
            raise RecipeError(
                f"Fine-tuning needs at least 1 layer to unfreeze. Received: layers={layers!r}"
            )
        chosen = weighted[-layers:]
    base.trainable = True
    for layer in base.layers:
        layer.trainable = False
    for layer in chosen:
        layer.trainable = True
        for inner in tf_compat.all_layers(layer, include_self=False):
            if _is_batch_norm(inner):
                inner.trainable = False
    return [layer.name for layer in chosen]


def _image_shape(base: keras.Model) -> tuple[int | None, ...]:
    inputs = getattr(base, "inputs", None) or []
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[-1] != 3:
        received = [tuple(t.shape) for t in inputs]
        raise ModelFileError(
            f"Base model {base.name!r} must take one RGB image input of shape (batch, height, width, 3). "
            f"Received input shapes: {received}. Use a model built for colour images."
        )
    return tuple(inputs[0].shape[1:])


def _nested_base(model: keras.Model) -> keras.Model:
    base = anatomy.nested_base(model)
    if not isinstance(base, keras.Model):
        raise RecipeError(
            f"Model {model.name!r} is not a TL Studio classifier: it has no nested base model named "
            f"{BASE_NAME!r} to fine-tune. Build it with build_classifier or load a TL Studio run."
        )
    return base


def _layers_from(base: keras.Model, weighted: list, from_layer: str) -> list:
    names = [layer.name for layer in base.layers]
    weighted_names = [layer.name for layer in weighted]
    if from_layer not in names:
        layer_part = from_layer.rsplit(":", 1)[0]
        if ":" in from_layer and layer_part in names:
            raise RecipeError(
                f"Fine-tuning starts from a layer, not a tensor: use {layer_part!r}. Received: {from_layer!r}"
            )
        close = difflib.get_close_matches(from_layer, weighted_names, n=3, cutoff=0.0)
        raise RecipeError(
            f"The base has no layer named {from_layer!r}. Did you mean {', '.join(map(repr, close))}? "
            f"Layers with weights, first to last: {_listing(weighted_names)}."
        )
    start = names.index(from_layer)
    chosen = [layer for layer in base.layers[start:] if any(layer is w for w in weighted)]
    if not chosen:
        raise RecipeError(
            f"No layer with weights from {from_layer!r} on, so nothing would be fine-tuned. "
            f"Choose one of: {_listing(weighted_names)}."
        )
    return chosen


def _listing(names: list[str], limit: int = 12) -> str:
    if len(names) <= limit:
        return ", ".join(map(repr, names))
    half = limit // 2
    first, last = ", ".join(map(repr, names[:half])), ", ".join(map(repr, names[-half:]))
    return f"{first}, ... ({len(names) - limit} more), {last}"


def _is_batch_norm(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)
