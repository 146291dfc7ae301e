"""Reach the tensors inside a classifier, by the names the base model's catalogue uses.

A TL Studio classifier nests its cut base as a sub-model named ``base``
(image -> preprocess -> base -> head, see :mod:`classifier`), so the base's
tensors (``block2_conv2:0``) are not tensors of the classifier itself.
:func:`tap_model` re-wires the nested base so that one model takes the
classifier's raw image and returns the chosen inner tensor, and optionally
also the class scores, from a single forward pass: that is what Grad-CAM
needs to take gradients at the inner tensor, and what the activations viewer
shows. A model without a nested base (any other functional Keras model) is
tapped directly, with names from its own catalogue.

The class score is the logit (the input of the final softmax) when the model
ends in a softmax, because the gradients of a saturated probability vanish.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from tlstudio.core import tf_compat
from tlstudio.core.spec import anatomy
from tlstudio.core.spec.errors import TensorNameError
from tlstudio.core.model.tensors import TensorInfo, catalogue


@dataclass(frozen=True)
class Tap:
    """A model from the raw image to ``[tensor]`` or ``[tensor, class scores]``.

    ``dense`` is the final softmax Dense layer whose logits are the scores
    (``model(x)[1]`` is then that layer's input, to multiply by its kernel),
    or None when ``model(x)[1]`` already holds the scores. ``logits`` says
    whether the scores are logits (softmax gives the probabilities) or the
    model's outputs themselves.
    """

    model: Any
    tensor: TensorInfo
    dense: Any = None
    logits: bool = False

    def scores(self, tail: Any) -> Any:
        """The class scores from the second output of :attr:`model` (inside a gradient tape)."""
        if self.dense is None:
            return tail
        import keras

        logits = keras.ops.matmul(tail, self.dense.kernel)
        return logits + self.dense.bias if self.dense.use_bias else logits


def inspected_model(model: Any) -> Any:
    """The model whose catalogue names the tensors: the nested base of a classifier, else ``model``."""
    base = anatomy.nested_base(model)
    return model if base is None else base


def tensor_infos(model: Any) -> list[TensorInfo]:
    """The catalogue of the tensors that can be tapped (see :func:`inspected_model`)."""
    return catalogue(inspected_model(model))


def is_spatial(info: TensorInfo) -> bool:
    """Whether a tensor is a map over image positions: (batch, height, width, channels), more than 1x1."""
    shape = info.shape
    return len(shape) == 4 and None not in shape[1:3] and shape[1] * shape[2] > 1


def find_tensor(model: Any, name: str, spatial: bool, purpose: str, allow_input: bool = True) -> TensorInfo:
    """The catalogue entry called ``name``; TensorNameError when there is none,
    with ``spatial`` when it has no spatial map, without ``allow_input`` when it
    is the base's input. ``purpose`` ("Grad-CAM") starts the error messages.
    Inner tensors that cannot be cut are fine here."""
    infos = tensor_infos(model)
    by_name = {info.name: info for info in infos}
    text = name.strip() if isinstance(name, str) else ""
    info = by_name.get(text)
    if info is None and f"{text}:0" in by_name:
        raise TensorNameError(
            f"{purpose}: {text!r} names an operation (a layer); it needs a tensor, an operation's output: "
            f"use {text + ':0'!r}. Received: {name!r}",
            (f"{text}:0",),
        )
    if info is None:
        pool = [i.name for i in infos[1:] if is_spatial(i)] if spatial else [i.name for i in infos]
        query = text if ":" in text else f"{text}:0"
        close = tuple(difflib.get_close_matches(query, pool, n=3, cutoff=0.0))
        raise TensorNameError(
            f"{purpose}: the base model has no tensor named {text!r}. Tensor names are 'layer:index' as "
            f"'tlstudio inspect' lists them, like {infos[-1].name!r}. Did you mean "
            f"{', '.join(map(repr, close))}? Received: {name!r}",
            close,
        )
    if not allow_input and info is infos[0]:
        nearest = nearest_spatial(infos, info)
        raise TensorNameError(
            f"{purpose} needs a tensor the base computes, not its input {info.name!r}: the input's channels are "
            f"colours, not features. Try {nearest[0]!r}, the first tensor after it. Received: {name!r}",
            nearest,
        )
    if spatial and not is_spatial(info):
        nearest = nearest_spatial(infos, info)
        offer = f" The nearest tensor with one is {nearest[0]!r}." if nearest else ""
        raise TensorNameError(
            f"{purpose} needs a spatial map (a tensor of height x width x channels), but {info.name!r} "
            f"has shape {_shape(info.shape)}: its positions were pooled, flattened or turned into dense "
            f"features.{offer} Received: {name!r}",
            nearest,
        )
    return info


def nearest_spatial(infos: list[TensorInfo], info: TensorInfo) -> tuple[str, ...]:
    """Spatial tensors closest to ``info`` in layer order, the one before it first; the input is never offered."""
    names = [i.name for i in infos]
    here = names.index(info.name)
    candidates = [
        (abs(i - here), i > here, other.name)
        for i, other in enumerate(infos)
        if i != here and i > 0 and is_spatial(other)
    ]
    return tuple(name for _, _, name in sorted(candidates)[:3])


def default_tensor(model: Any) -> TensorInfo:
    """Where Grad-CAM looks by default: the cut tensor (the nested base's output),
    or the nearest spatial tensor before it when the cut has no spatial map."""
    infos = tensor_infos(model)
    inner = inspected_model(model)
    tensors = _tensors_by_name(inner)
    output = inner.outputs[0]
    cut = next((i for i in infos if tensors.get(i.name) is output), infos[-1])
    if is_spatial(cut):
        return cut
    before = [i for i in infos[1 : infos.index(cut)] if is_spatial(i)]
    if not before:
        raise TensorNameError(
            f"Grad-CAM needs a spatial map, and model {model.name!r} has no tensor of height x width x "
            "channels before its output.",
        )
    return before[-1]


def tap_model(model: Any, info: TensorInfo, with_scores: bool) -> Tap:
    """A model from ``model``'s image input to ``info``'s tensor (and the class scores)."""
    import keras

    inner = inspected_model(model)
    tensor = _tensors_by_name(inner)[info.name]
    score, dense, logits = _score_tensor(model) if with_scores else (None, None, False)
    if inner is model:
        outputs = [tensor, score] if with_scores else tensor
        return Tap(keras.Model(model.inputs[0], outputs, name="tap"), info, dense, logits)
    node = _call_node(model, inner)
    feeding, produced = node.input_tensors[0], node.output_tensors[0]
    source = model.inputs[0]
    image = keras.Input(shape=tuple(source.shape[1:]), dtype=source.dtype, name="image")
    x = image if feeding is source else keras.Model(source, feeding, name="tap_before")(image)
    if not with_scores:
        value = x if tensor is inner.inputs[0] else keras.Model(inner.inputs[0], tensor, name="tap_base")(x)
        return Tap(keras.Model(image, value, name="tap"), info)
    if tensor is inner.inputs[0]:
        value, features = x, inner(x)
    else:
        value, features = keras.Model(inner.inputs[0], [tensor, inner.outputs[0]], name="tap_base")(x)
    head = keras.Model(produced, score, name="tap_head")
    return Tap(keras.Model(image, [value, head(features)], name="tap"), info, dense, logits)


def input_size(model: Any) -> tuple[int, int]:
    """The (height, width) the model takes."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[2] is None or shape[3] != 3:
        raise TensorNameError(
            f"Model {model.name!r} must take RGB images of a fixed size, input shape (None, H, W, 3). "
            f"Received: input shape {shape}"
        )
    return int(shape[1]), int(shape[2])


def image_batch(image_rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One RGB image (H, W, 3), uint8 or 0..255 floats, as a float32 batch of one at ``size`` (bilinear)."""
    from PIL import Image

    pixels = np.asarray(image_rgb)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"Expected an RGB image of shape (height, width, 3). Received: shape {pixels.shape}")
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    height, width = size
    if pixels.shape[:2] != (height, width):
        pixels = np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR))
    return pixels[None].astype(np.float32)


def _tensors_by_name(model: Any) -> dict[str, Any]:
    """``layer:index`` -> symbolic tensor for every tensor of ``model``'s graph, the layer's first call winning."""
    found: dict[str, tuple[int, Any]] = {}
    for tensor, operation, node_index, tensor_index in _walk_back(model):
        name = f"{operation.name}:{tensor_index}"
        if name not in found or node_index < found[name][0]:
            found[name] = (node_index, tensor)
    return {name: tensor for name, (_, tensor) in found.items()}


def _call_node(model: Any, layer: Any) -> Any:
    """The call of ``layer`` inside ``model``'s graph, found by walking back from the outputs."""
    for _, operation, node_index, _ in _walk_back(model):
        if operation is layer:
            return tf_compat.inbound_nodes(operation)[node_index]
    raise TensorNameError(f"Model {model.name!r} does not call its layer {layer.name!r}.")


def _walk_back(model: Any) -> Iterator[tuple[Any, Any, int, int]]:
    """Each tensor of ``model``'s graph once, from the outputs back to the inputs, with its Keras
    history: ``(tensor, operation, node_index, tensor_index)``."""
    stack = list(model.outputs)
    seen: set[int] = set()
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        operation, node_index, tensor_index = tf_compat.keras_history(tensor)
        yield tensor, operation, node_index, tensor_index
        if not any(tensor is source for source in model.inputs):
            stack.extend(tf_compat.inbound_nodes(operation)[node_index].input_tensors)


def _score_tensor(model: Any) -> tuple[Any, Any, bool]:
    """The tensor the class scores come from, the softmax Dense layer to apply (or None),
    and whether the scores are logits."""
    import keras

    output = model.outputs[0]
    layer = tf_compat.producer(output)
    if isinstance(layer, keras.layers.Dense) and _activation(layer) == "softmax":
        return _node_input(output), layer, True
    if isinstance(layer, keras.layers.Softmax) or (
        isinstance(layer, keras.layers.Activation) and _activation(layer) == "softmax"
    ):
        return _node_input(output), None, True
    return output, None, False


def _node_input(tensor: Any) -> Any:
    return tf_compat.call_node(tensor).input_tensors[0]


def _activation(layer: Any) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation))


def _shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"
