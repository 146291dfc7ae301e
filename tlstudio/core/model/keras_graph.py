"""Walking a Keras functional model's graph: which layer call made a tensor, and in what order.

Shared by the tensor catalogue (:mod:`tlstudio.core.model.tensors`) and the
receptive fields (:mod:`tlstudio.core.model.receptive_field`). The private
Keras attributes this needs are read through :mod:`tlstudio.core.tf_compat`.
"""

from __future__ import annotations

from typing import Any

from tlstudio.core import tf_compat


def producer(tensor: Any) -> Any:
    """The layer whose call produced ``tensor``."""
    return tf_compat.producer(tensor)


def node_of(tensor: Any) -> Any:
    """The layer call (``Node``) that produced ``tensor``."""
    return tf_compat.call_node(tensor)


def node_inputs(node: Any) -> list[Any]:
    """The tensors a layer call read."""
    return list(node.input_tensors)


def collect_nodes(inputs: list[Any], outputs: list[Any]) -> tuple[list[Any], set[int]]:
    """The layer calls between the inputs and the outputs (the model's own graph),
    and the ids of the tensors the outputs are computed from (the outputs included)."""
    input_ids = {id(tensor) for tensor in inputs}
    seen: dict[int, Any] = {}
    live: set[int] = set()
    stack = list(outputs)
    while stack:
        tensor = stack.pop()
        live.add(id(tensor))
        node = node_of(tensor)
        if id(node) in seen:
            continue
        seen[id(node)] = node
        if id(tensor) in input_ids:
            continue
        stack.extend(node_inputs(node))
    return list(seen.values()), live


def topological_tensors(nodes: list[Any], inputs: list[Any]) -> list[Any]:
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
                pending = (node_of(t) for t in node_inputs(current))
                stack.extend((parent, False) for parent in pending if id(parent) not in done)

    for node in nodes:
        visit(node)
    return ordered
