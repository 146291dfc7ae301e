"""The catalogue of tensors a base model can be cut at, and the cut itself.

Names follow TensorFlow's convention: a layer (an operation) is named
``block4_pool``; a tensor is one output of an operation, named
``layer:index`` (``block4_pool:0``; a layer with several outputs has ``:0``,
``:1``, ...). A cut needs a tensor, so ``block4_pool`` alone is refused with an
explanation.

Only the top-level layers of a model are catalogued: a nested sub-model is one
layer whose outputs are ``submodel:0``, ...; to cut inside it, use the
sub-model itself as the base. A layer called more than once (a shared layer)
is listed for its first call only.

Receptive fields are computed in :mod:`tlstudio.core.model.receptive_field`.

Cut rules
    The input cannot be cut: nothing of the base would remain. A tensor can
    be cut only if every path from the input to the output runs through it
    (it is a bottleneck of the graph); a tensor inside a residual or parallel
    branch is not, because the rest of the network also needs the other path
    (the skip connection) that joins it later.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from tlstudio.core import tf_compat
from tlstudio.core.model.keras_graph import collect_nodes, node_inputs, node_of, producer, topological_tensors
from tlstudio.core.model.receptive_field import receptive_fields, report_field, spatial_input_size
from tlstudio.core.spec.errors import TensorNameError, UserError

if TYPE_CHECKING:
    import keras

_BLOCK = re.compile(r"^(block\d+)[a-z]?_")
_INDEX = re.compile(r"^(?P<layer>.*):(?P<index>[^:]*)$")

_INPUT_REASON = "it is the model's input: nothing of the base model would remain; choose a tensor after it"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a model, as the catalogue shows it.

    ``params`` and ``trainable_params`` are those of the layer that produces
    the tensor. ``receptive_field`` and ``jump`` are in input pixels (see the
    module docstring for how they are computed and when they are None).
    ``reason`` says why the model cannot be cut here ("" when it can);
    ``block`` is the VGG-style block prefix ("block3" for ``block3_conv1``,
    "" when the layer name has none). ``joins_at`` is, for a tensor inside a
    branch, the tensor where its branch joins the rest again
    (``block3b_add:0``; "" otherwise); ``merges`` lists the tensors a join
    (a layer that reads more than one tensor, such as ``Add``) combines.
    """

    name: str
    layer: str
    layer_type: str
    shape: tuple[int | None, ...]
    params: int
    trainable_params: int
    receptive_field: int | None
    jump: int | None
    cuttable: bool
    reason: str
    block: str
    joins_at: str = ""
    merges: tuple[str, ...] = ()


@dataclass
class _Graph:
    """The analysed tensor graph of one model."""

    infos: list[TensorInfo]
    tensors: dict[str, Any]
    layer_outputs: dict[str, int]


def catalogue(model: "keras.Model") -> list[TensorInfo]:
    """Every tensor of ``model`` in layer order, the input included (not cuttable)."""
    return _analyse(model).infos


def resolve_tensor(model: "keras.Model", name: str) -> TensorInfo:
    """The catalogue entry for a cut tensor name, or a TensorNameError saying why not.

    The error's ``suggestions`` are the names the user most likely meant.
    """
    graph = _analyse(model)
    return _resolve(graph, name)


def default_cut_tensor(model: "keras.Model") -> str:
    """The tensor a new head goes on when the user does not choose one.

    It is the output of the second-to-last layer of the classification
    network: a model that ends in its classification layer (a Dense layer
    with softmax or sigmoid, or named ``predictions``, possibly followed by a
    softmax activation layer) is cut at that layer's input (``fc2:0`` for
    VGG16 with its top). Any other model has already lost its classification
    layer (VGG16 without the top ends in ``block5_pool``) and is cut at its
    output.
    """
    graph = _analyse(model)
    output = _model_outputs(model)[0]
    tensor, layer, softmax_follows = output, producer(output), False
    if _is_softmax_layer(layer):
        before = _single_input(output)
        if before is not None and _is_dense(producer(before)):
            tensor, layer, softmax_follows = before, producer(before), True
    candidate = _single_input(tensor) if _is_classification_dense(layer, softmax_follows) else output
    names = {id(value): name for name, value in graph.tensors.items()}
    for choice in (candidate, output):
        name = names.get(id(choice)) if choice is not None else None
        if name is not None and _info(graph, name).cuttable:
            return name
    raise UserError(
        f"Model {model.name!r} has no default cut tensor: its first output {names.get(id(output))!r} "
        "does not hold the whole network (the model has several outputs). "
        "Choose a cut tensor from the catalogue."
    )


def cut_model(model: "keras.Model", name: str) -> "keras.Model":
    """A model from ``model``'s input to the tensor ``name``, sharing its layers and weights."""
    graph = _analyse(model)
    info = _resolve(graph, name)
    return _cut(model, graph, info, f"{model.name}_to_{info.layer}")


# --- the graph analysis -----------------------------------------------------------


def _analyse(model: "keras.Model") -> _Graph:
    inputs = model_inputs(model)
    outputs = _model_outputs(model)
    nodes, live = collect_nodes(inputs, outputs)
    order = {id(producer(tensor)): -1 for tensor in inputs}
    order.update({id(layer): i for i, layer in enumerate(model.layers)})

    tensor_names: dict[int, str] = {}
    tensors: dict[str, Any] = {}
    layer_outputs: dict[str, int] = {}
    named_layers: set[int] = set()
    def layer_order(node: Any) -> tuple[int, int]:
        return order.get(id(node.operation), len(order)), tf_compat.inbound_nodes(node.operation).index(node)

    for node in sorted(nodes, key=layer_order):
        layer = node.operation
        if id(layer) in named_layers:
            continue
        named_layers.add(id(layer))
        layer_outputs[layer.name] = len(node.outputs)
        for index, tensor in enumerate(node.outputs):
            name = f"{layer.name}:{index}"
            tensor_names[id(tensor)] = name
            tensors[name] = tensor

    topological = topological_tensors(nodes, inputs)
    cuttable = _bottlenecks(topological, nodes, inputs, outputs, live)
    fields = receptive_fields(topological, inputs)
    input_size = spatial_input_size(inputs)
    input_ids = {id(tensor) for tensor in inputs}
    position = {id(tensor): i for i, tensor in enumerate(topological)}

    infos = []
    for name, tensor in tensors.items():
        layer = producer(tensor)
        joins_at, merges = "", ()
        if id(tensor) in input_ids:
            reason = _INPUT_REASON
        else:
            read = node_inputs(node_of(tensor))
            if len(read) > 1:
                merges = tuple(tensor_names.get(id(t), "?") for t in read)
            if id(tensor) in cuttable:
                reason = ""
            elif id(tensor) not in live:
                reason = "the model's output does not use this tensor, so it holds nothing the network relies on"
            else:
                after = _next_bottleneck(tensor, topological, position, cuttable, tensor_names)
                joins_at = tensor_names[id(after)] if after is not None else ""
                reason = _branch_reason(tensor, after, topological, position, cuttable, tensor_names, inputs)
        size, jump = report_field(fields.get(id(tensor)), input_size)
        infos.append(
            TensorInfo(
                name=name,
                layer=layer.name,
                layer_type=type(layer).__name__,
                shape=tuple(tensor.shape),
                params=sum(_size(w.shape) for w in layer.weights),
                trainable_params=sum(_size(w.shape) for w in layer.trainable_weights),
                receptive_field=size,
                jump=jump,
                cuttable=not reason,
                reason=reason,
                block=_block(layer.name),
                joins_at=joins_at,
                merges=merges,
            )
        )
    return _Graph(infos=infos, tensors=tensors, layer_outputs=layer_outputs)


def model_inputs(model: "keras.Model") -> list[Any]:
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise UserError(
            f"Model {model.name!r} has no symbolic inputs, so its layers cannot be listed or cut. "
            "TL Studio works with functional or sequential Keras models built on keras.Input; "
            f"rebuild it that way and save it again. Received: {type(model).__name__}"
        )
    return list(inputs)


def _model_outputs(model: "keras.Model") -> list[Any]:
    model_inputs(model)
    return list(model.outputs)


def _bottlenecks(
    topological: list[Any], nodes: list[Any], inputs: list[Any], outputs: list[Any], live: set[int]
) -> set[int]:
    """Live tensors that every path from an input to an output runs through.

    With the live tensors in topological order between a virtual source
    (feeding every input) and a virtual sink (fed by every output), a tensor
    lies on every path exactly when no edge jumps over its position.
    """
    ordered = [tensor for tensor in topological if id(tensor) in live]
    position = {id(tensor): i + 1 for i, tensor in enumerate(ordered)}
    sink = len(ordered) + 1
    edges: list[tuple[int, int]] = [(0, position[id(t)]) for t in inputs]
    edges += [(position[id(t)], sink) for t in outputs]
    for node in nodes:
        for source in node_inputs(node):
            for target in node.outputs:
                if id(source) in position and id(target) in position:
                    edges.append((position[id(source)], position[id(target)]))
    spans = [0] * (sink + 1)
    for start, end in edges:
        if end - start > 1:
            spans[start + 1] += 1
            spans[end] -= 1
    result: set[int] = set()
    running = 0
    for i in range(1, sink):
        running += spans[i]
        if running == 0:
            result.add(id(ordered[i - 1]))
    return result


def _next_bottleneck(
    tensor: Any, topological: list[Any], position: dict[int, int], cuttable: set[int], names: dict[int, str]
) -> Any:
    """The first named tensor after ``tensor`` that every path runs through: where its branch joins; or None."""
    here = position[id(tensor)]
    return next((t for t in topological[here + 1 :] if id(t) in cuttable and id(t) in names), None)


def _branch_reason(
    tensor: Any,
    after: Any,
    topological: list[Any],
    position: dict[int, int],
    cuttable: set[int],
    names: dict[int, str],
    inputs: list[Any],
) -> str:
    here = position[id(tensor)]
    earlier = (t for t in reversed(topological[:here]) if not _is_input(t, inputs))
    before = next((t for t in earlier if id(t) in cuttable and id(t) in names), None)
    alternatives = []
    if after is not None:
        alternatives.append(f"at {names[id(after)]!r} where the branches join")
    if before is not None:
        alternatives.append(f"at {names[id(before)]!r} before they split")
    hint = f" Cut {' or '.join(alternatives)}." if alternatives else ""
    if after is None:
        return (
            "it feeds only some of the model's outputs, so a head on it would miss the others." + hint
        )
    join = producer(after)
    kind = "a residual branch" if type(join).__name__ == "Add" else "a parallel branch"
    return (
        f"inside {kind}: the model also needs the other path that joins it at {join.name!r}, "
        "so a head on this tensor alone would miss it." + hint
    )


def _is_input(tensor: Any, inputs: list[Any]) -> bool:
    return any(tensor is t for t in inputs)


def _info(graph: _Graph, name: str) -> TensorInfo:
    return next(info for info in graph.infos if info.name == name)


def _block(layer_name: str) -> str:
    match = _BLOCK.match(layer_name)
    return match.group(1) if match else ""


def _size(shape: Iterable[int]) -> int:
    total = 1
    for dim in shape:
        total *= int(dim)
    return total


# --- names --------------------------------------------------------------------------


def _resolve(graph: _Graph, name: str) -> TensorInfo:
    text = name.strip() if isinstance(name, str) else ""
    by_name = {info.name: info for info in graph.infos}
    if text in by_name:
        info = by_name[text]
        if not info.cuttable:
            raise TensorNameError(
                f"Cannot cut the model at {text!r}: {info.reason}",
                _nearby_cuttable(graph, info),
            )
        return info
    if text in graph.layer_outputs:
        count = graph.layer_outputs[text]
        tensors = tuple(f"{text}:{i}" for i in range(count))
        if count == 1:
            raise TensorNameError(
                f"{text!r} names an operation (a layer); a cut needs a tensor, which is an "
                f"operation's output: use {tensors[0]!r}.",
                tensors,
            )
        raise TensorNameError(
            f"{text!r} names an operation (a layer); a cut needs a tensor, which is an operation's "
            f"output. It has {count} outputs: {', '.join(repr(t) for t in tensors)}; choose one.",
            tensors,
        )
    match = _INDEX.match(text)
    if match and match.group("layer") in graph.layer_outputs:
        layer = match.group("layer")
        count = graph.layer_outputs[layer]
        tensors = tuple(f"{layer}:{i}" for i in range(count))
        if count == 1:
            valid = f"it has one output, so its only tensor is {tensors[0]!r}"
        else:
            valid = f"it has {count} outputs, indexes 0 to {count - 1}: {', '.join(repr(t) for t in tensors)}"
        raise TensorNameError(
            f"Layer {layer!r} has no output {match.group('index')!r}: {valid}. Received: {text!r}",
            tensors,
        )
    suggestions = _nearest(graph, text)
    shown = ", ".join(repr(s) for s in suggestions)
    raise TensorNameError(
        f"No tensor named {text!r} in this model. Tensor names are 'layer:index', like "
        f"{graph.infos[-1].name!r}. Did you mean {shown}? Received: {name!r}",
        suggestions,
    )


def _nearest(graph: _Graph, text: str) -> tuple[str, ...]:
    candidates = [info.name for info in graph.infos if info.cuttable] or [info.name for info in graph.infos]
    query = text if ":" in text else f"{text}:0"
    return tuple(difflib.get_close_matches(query, candidates, n=3, cutoff=0.0))


def _nearby_cuttable(graph: _Graph, info: TensorInfo) -> tuple[str, ...]:
    names = [i.name for i in graph.infos]
    here = names.index(info.name)
    after = next((i.name for i in graph.infos[here + 1 :] if i.cuttable), None)
    before = next((i.name for i in reversed(graph.infos[:here]) if i.cuttable), None)
    return tuple(n for n in (after, before) if n is not None)


# --- default cut and cutting ---------------------------------------------------------


def _is_softmax_layer(layer: Any) -> bool:
    import keras

    if isinstance(layer, keras.layers.Softmax):
        return True
    return isinstance(layer, keras.layers.Activation) and _activation_name(layer) in ("softmax", "sigmoid")


def _is_dense(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.layers.Dense)


def _is_classification_dense(layer: Any, softmax_follows: bool) -> bool:
    if not _is_dense(layer):
        return False
    return softmax_follows or _activation_name(layer) in ("softmax", "sigmoid") or layer.name == "predictions"


def _activation_name(layer: Any) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation))


def _single_input(tensor: Any) -> Any:
    read = node_inputs(node_of(tensor))
    return read[0] if len(read) == 1 else None


def _cut(model: "keras.Model", graph: _Graph, info: TensorInfo, name: str) -> "keras.Model":
    import keras

    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, graph.tensors[info.name], name=name)
