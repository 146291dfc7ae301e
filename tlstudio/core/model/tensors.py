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

Receptive field
    The size, in input pixels, of the window one position of a tensor sees,
    and the jump, the distance in input pixels between two neighbouring
    positions. Both start at 1 at the input and follow the graph: a
    convolution with kernel ``k``, dilation ``d`` and stride ``s`` adds
    ``(k - 1) * d * jump`` to the size and multiplies the jump by ``s``; a
    pooling window ``k`` adds ``(k - 1) * jump`` and multiplies the jump by
    its stride. The size is the theoretical one and may exceed the input
    (padding fills the rest). Where branches merge, the largest field counts;
    a branch that has been globally pooled (squeeze-and-excitation gating) is
    ignored there, so the size is that of the convolution path. Where height
    and width differ, the larger is reported. A tensor without spatial axes
    (after flatten, a dense layer or global pooling) sees the whole image:
    its size is reported as the input size and its jump as None.
    Layers whose effect on positions is unknown (reshape, up-sampling,
    transposed convolution, custom layers that change the spatial size) give
    None.

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
from tlstudio.core.spec.errors import TensorNameError, UserError

if TYPE_CHECKING:
    import keras

_BLOCK = re.compile(r"^(block\d+)[a-z]?_")
_INDEX = re.compile(r"^(?P<layer>.*):(?P<index>[^:]*)$")
_SUFFIX = re.compile(r"^(?P<name>.+)_\d+$")

_INPUT_REASON = "it is the model's input: nothing of the base model would remain; choose a tensor after it"

_WHOLE = "whole"
"""Receptive-field marker: the tensor sees the whole input."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a model, as the catalogue shows it.

    ``params`` and ``trainable_params`` are those of the layer that produces
    the tensor. ``receptive_field`` and ``jump`` are in input pixels (see the
    module docstring for how they are computed and when they are None).
    ``reason`` says why the model cannot be cut here ("" when it can);
    ``block`` is the VGG-style block prefix ("block3" for ``block3_conv1``,
    "" when the layer name has none).
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
    tensor, layer, softmax_follows = output, _producer(output), False
    if _is_softmax_layer(layer):
        before = _single_input(output)
        if before is not None and _is_dense(_producer(before)):
            tensor, layer, softmax_follows = before, _producer(before), True
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


def graph_tensors(model: "keras.Model") -> dict[str, list[str]]:
    """The tensors of the traced TensorFlow graph, grouped by the layer that makes them.

    The model is traced once (no data runs through it) and every graph
    tensor that carries data from the input is kept. Names are TensorFlow's,
    without the model's own scope and without the ``_1`` suffixes tracing adds
    to make scopes unique, so they read ``block1_conv1/Relu:0``. Layers
    whose work has no graph operation of its own (the input aside) are
    absent.
    """
    import tensorflow as tf

    inputs = _model_inputs(model)
    input_names = [_producer(tensor).name for tensor in inputs]
    specs = [
        tf.TensorSpec(tuple(tensor.shape), tensor.dtype, name=input_name)
        for tensor, input_name in zip(inputs, input_names)
    ]

    def forward(*values):
        return model(values[0] if len(values) == 1 else list(values), training=False)

    concrete = tf.function(forward, autograph=False).get_concrete_function(*specs)
    graph = concrete.graph
    placeholders = [tensor.op for tensor in concrete.inputs[: len(specs)]]
    data_ops = _downstream_ops(placeholders)
    result: dict[str, list[str]] = {name: [] for name in input_names}
    for op, input_name in zip(placeholders, input_names):
        result[input_name] = [f"{input_name}:{i}" for i in range(len(op.outputs))]
    operations = [op for op in graph.get_operations() if op in data_ops and op not in placeholders]
    mapper = _ScopeMapper(model, [op.name.split("/") for op in operations])
    for op in operations:
        mapped = mapper.map(op.name.split("/"))
        if mapped is None:
            continue
        layer_name, path = mapped
        names = result.setdefault(layer_name, [])
        names.extend(f"{path}:{i}" for i in range(len(op.outputs)))
    return {name: tensors for name, tensors in result.items() if tensors}


# --- the graph analysis -----------------------------------------------------------


def _analyse(model: "keras.Model") -> _Graph:
    inputs = _model_inputs(model)
    outputs = _model_outputs(model)
    nodes, live = _collect_nodes(inputs, outputs)
    order = {id(_producer(tensor)): -1 for tensor in inputs}
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

    topological = _topological_tensors(nodes, inputs)
    cuttable = _bottlenecks(topological, nodes, inputs, outputs, live)
    fields = _receptive_fields(topological, inputs)
    input_size = _input_size(inputs)
    input_ids = {id(tensor) for tensor in inputs}
    position = {id(tensor): i for i, tensor in enumerate(topological)}

    infos = []
    for name, tensor in tensors.items():
        layer = _producer(tensor)
        if id(tensor) in input_ids:
            reason = _INPUT_REASON
        elif id(tensor) in cuttable:
            reason = ""
        elif id(tensor) not in live:
            reason = "the model's output does not use this tensor, so it holds nothing the network relies on"
        else:
            reason = _branch_reason(tensor, topological, position, cuttable, tensor_names, inputs)
        size, jump = _report_field(fields.get(id(tensor)), input_size)
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
            )
        )
    return _Graph(infos=infos, tensors=tensors, layer_outputs=layer_outputs)


def _model_inputs(model: "keras.Model") -> list[Any]:
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise UserError(
            f"Model {model.name!r} has no symbolic inputs, so its layers cannot be listed or cut. "
            "TL Studio works with functional or sequential Keras models built on keras.Input; "
            f"rebuild it that way and save it again. Received: {type(model).__name__}"
        )
    return list(inputs)


def _model_outputs(model: "keras.Model") -> list[Any]:
    _model_inputs(model)
    return list(model.outputs)


def _producer(tensor: Any) -> Any:
    return tf_compat.producer(tensor)


def _node_of(tensor: Any) -> Any:
    return tf_compat.call_node(tensor)


def _node_inputs(node: Any) -> list[Any]:
    return list(node.input_tensors)


def _collect_nodes(inputs: list[Any], outputs: list[Any]) -> tuple[list[Any], set[int]]:
    """The layer calls between the inputs and the outputs (the model's own graph),
    and the ids of the tensors the outputs are computed from (the outputs included)."""
    input_ids = {id(tensor) for tensor in inputs}
    seen: dict[int, Any] = {}
    live: set[int] = set()
    stack = list(outputs)
    while stack:
        tensor = stack.pop()
        live.add(id(tensor))
        node = _node_of(tensor)
        if id(node) in seen:
            continue
        seen[id(node)] = node
        if id(tensor) in input_ids:
            continue
        stack.extend(_node_inputs(node))
    return list(seen.values()), live


def _topological_tensors(nodes: list[Any], inputs: list[Any]) -> list[Any]:
    """Every tensor of the graph, each after all tensors it is computed from."""
    input_ids = {id(tensor) for tensor in inputs}
    ordered: list[Any] = []
    done: set[int] = set()

    def visit(node: Any) -> None:
        stack = [(node, False)]
        while stack:
            current, expanded = stack.pop()
            if id(current) in done:
                continue
            if expanded:
                done.add(id(current))
                ordered.extend(current.outputs)
                continue
            stack.append((current, True))
            if not any(id(t) in input_ids for t in current.outputs):
                pending = (_node_of(t) for t in _node_inputs(current))
                stack.extend((parent, False) for parent in pending if id(parent) not in done)

    for node in nodes:
        visit(node)
    return ordered


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
        for source in _node_inputs(node):
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


def _branch_reason(
    tensor: Any,
    topological: list[Any],
    position: dict[int, int],
    cuttable: set[int],
    names: dict[int, str],
    inputs: list[Any],
) -> str:
    here = position[id(tensor)]
    after = next((t for t in topological[here + 1 :] if id(t) in cuttable and id(t) in names), None)
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
    join = _producer(after)
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


# --- receptive fields ---------------------------------------------------------------


def _receptive_fields(topological: list[Any], inputs: list[Any]) -> dict[int, Any]:
    """Per tensor: (sizes, jumps) per spatial axis, _WHOLE, or None when unknown."""
    fields: dict[int, Any] = {}
    for tensor in inputs:
        spatial = len(tensor.shape) - 2
        fields[id(tensor)] = ((1,) * spatial, (1,) * spatial) if spatial > 0 else None
    for tensor in topological:
        if id(tensor) in fields:
            continue
        node = _node_of(tensor)
        incoming = [(t, fields.get(id(t))) for t in _node_inputs(node)]
        fields[id(tensor)] = _field_through(node.operation, incoming, tensor)
    return fields


def _field_through(layer: Any, incoming: list[tuple[Any, Any]], output: Any) -> Any:
    """The field of ``output`` from the (tensor, field) pairs the layer reads."""
    import keras

    global_pools = (
        keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
        keras.layers.GlobalAveragePooling3D, keras.layers.GlobalMaxPooling1D,
        keras.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling3D,
    )  # fmt: skip
    if isinstance(layer, global_pools) or len(output.shape) <= 2:
        return _WHOLE
    fields = [field for _, field in incoming]
    if not fields or None in fields:
        return None
    spatial_inputs = [tensor for tensor, field in incoming if field != _WHOLE]
    spatial = [field for field in fields if field != _WHOLE]
    if not spatial:
        return _WHOLE
    if len(spatial) == 1:
        sizes, jumps = spatial[0]
    else:
        sizes = tuple(max(f[0][axis] for f in spatial) for axis in range(len(spatial[0][0])))
        jumps = tuple(max(f[1][axis] for f in spatial) for axis in range(len(spatial[0][1])))
    step = _layer_step(layer, len(sizes), spatial_inputs, output)
    if step is None:
        return None
    kernels, strides = step
    new_sizes = tuple(s + (k - 1) * j for s, k, j in zip(sizes, kernels, jumps))
    new_jumps = tuple(j * st for j, st in zip(jumps, strides))
    return new_sizes, new_jumps


def _layer_step(
    layer: Any, axes: int, input_tensors: list[Any], output: Any
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(effective kernel, stride) per spatial axis of one layer, or None when unknown."""
    import keras

    transposed = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
    if isinstance(layer, transposed):
        return None
    if hasattr(layer, "kernel_size") and hasattr(layer, "strides"):
        kernel = _axes(layer.kernel_size, axes)
        dilation = _axes(getattr(layer, "dilation_rate", 1), axes)
        return tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation)), _axes(layer.strides, axes)
    if hasattr(layer, "pool_size") and hasattr(layer, "strides"):
        pool = _axes(layer.pool_size, axes)
        strides = _axes(layer.strides if layer.strides is not None else layer.pool_size, axes)
        return pool, strides
    if isinstance(layer, keras.Model) and len(layer.inputs) == 1 and len(layer.outputs) == 1:
        inner = layer.inputs[0]
        nodes, _ = _collect_nodes([inner], [layer.outputs[0]])
        fields = _receptive_fields(_topological_tensors(nodes, [inner]), [inner])
        field = fields.get(id(layer.outputs[0]))
        if field is None or field == _WHOLE or len(field[0]) != axes:
            return None
        return field
    padding_layers = (
        keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D,
        keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D,
    )  # fmt: skip
    if isinstance(layer, padding_layers):
        return (1,) * axes, (1,) * axes
    same_positions = all(
        len(t.shape) == len(output.shape) and tuple(t.shape[1:-1]) == tuple(output.shape[1:-1])
        for t in input_tensors
    )
    return ((1,) * axes, (1,) * axes) if same_positions else None


def _axes(value: Any, axes: int) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * axes
    return tuple(int(v) for v in values[:axes])


def _input_size(inputs: list[Any]) -> int | None:
    spatial = [d for d in inputs[0].shape[1:-1]] if len(inputs[0].shape) > 2 else []
    if not spatial or any(d is None for d in spatial):
        return None
    return int(max(spatial))


def _report_field(field: Any, input_size: int | None) -> tuple[int | None, int | None]:
    if field is None:
        return None, None
    if field == _WHOLE:
        return input_size, None
    sizes, jumps = field
    return int(max(sizes)), int(max(jumps))


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
    node_inputs = _node_inputs(_node_of(tensor))
    return node_inputs[0] if len(node_inputs) == 1 else None


def _cut(model: "keras.Model", graph: _Graph, info: TensorInfo, name: str) -> "keras.Model":
    import keras

    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, graph.tensors[info.name], name=name)


# --- traced graph names ----------------------------------------------------------------


def _downstream_ops(sources: list[Any]) -> set[Any]:
    reached = set(sources)
    stack = list(sources)
    while stack:
        op = stack.pop()
        for output in op.outputs:
            for consumer in output.consumers():
                if consumer not in reached:
                    reached.add(consumer)
                    stack.append(consumer)
    return reached


def _scope_names(component: str, name: str) -> bool:
    """Whether a traced scope component is ``name``, possibly with a ``_N`` suffix."""
    match = _SUFFIX.match(component)
    return component == name or bool(match and match.group("name") == name)


class _ScopeMapper:
    """Map traced scope paths to layer names, undoing the ``_N`` uniquifying suffixes.

    A scope component can name a layer as is or with a suffix; when both
    readings name a layer (layers ``conv`` and ``conv_1``), the reading the
    unambiguous components of the same trace use decides.
    """

    def __init__(self, model: Any, paths: list[list[str]]) -> None:
        self.model = model
        self._names: dict[int, set[str]] = {}
        self.prefer_suffix = self._suffix_majority(model, paths)

    def _suffix_majority(self, model: Any, paths: list[list[str]]) -> bool:
        exact = suffixed = 0
        for path in paths:
            components = self._strip_model_scope(model, path)
            if not components:
                continue
            plain, stripped = self._readings(model, components[0])
            exact += bool(plain and not stripped)
            suffixed += bool(stripped and not plain)
        return suffixed >= exact

    def _layer_names(self, model: Any) -> set[str]:
        if id(model) not in self._names:
            self._names[id(model)] = {layer.name for layer in model.layers}
        return self._names[id(model)]

    def _readings(self, model: Any, component: str) -> tuple[str | None, str | None]:
        names = self._layer_names(model)
        plain = component if component in names else None
        match = _SUFFIX.match(component)
        stripped = match.group("name") if match and match.group("name") in names else None
        return plain, stripped

    def _strip_model_scope(self, model: Any, path: list[str]) -> list[str]:
        if path and path[0] not in self._layer_names(model) and _scope_names(path[0], model.name):
            return path[1:]
        return path

    def _layer_for(self, model: Any, component: str) -> Any:
        plain, stripped = self._readings(model, component)
        chosen = (stripped or plain) if self.prefer_suffix else (plain or stripped)
        return model.get_layer(chosen) if chosen else None

    def map(self, path: list[str]) -> tuple[str, str] | None:
        """(layer name, normalised tensor path) or None for ops outside every layer."""
        components = self._strip_model_scope(self.model, path)
        if len(components) < 2:
            return None
        layer = self._layer_for(self.model, components[0])
        if layer is None:
            return None
        rest = self._normalise(layer, components[1:])
        return layer.name, "/".join([layer.name, *rest])

    def _normalise(self, layer: Any, rest: list[str]) -> list[str]:
        import keras

        if not isinstance(layer, keras.Model) or len(rest) < 2:
            return rest
        inner = self._layer_for(layer, rest[0])
        if inner is None:
            return rest
        return [inner.name, *self._normalise(inner, rest[1:])]
