"""The tensors of a model's traced TensorFlow graph, named as TensorFlow names them, per layer.

``tlstudio inspect --graph`` lists them: one Keras layer is often several
graph operations (``block1_conv1/Conv2D``, ``block1_conv1/BiasAdd``,
``block1_conv1/Relu``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from tlstudio.core.model.keras_graph import producer
from tlstudio.core.model.tensors import model_inputs

if TYPE_CHECKING:
    import keras

_SUFFIX = re.compile(r"^(?P<name>.+)_\d+$")


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

    inputs = model_inputs(model)
    input_names = [producer(tensor).name for tensor in inputs]
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
