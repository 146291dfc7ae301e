"""Every private TensorFlow/Keras call TL Studio relies on, in one place.

Keras 3 gives no public way to walk a functional model's graph from a tensor
back to the layer call that made it, to list the layers nested inside a
layer, or to tell a multi-worker strategy from a single-worker one; nor does
TensorFlow let a program give the cluster's coordination service a timeout.
These are the private attributes and calls used for that, each behind a
small function pinned by ``tests/core/test_tf_compat.py``: after an upgrade
that changes one of them, that test fails first and names which.

This is the engine's bottom layer: any core module may import it. It imports
TensorFlow and Keras only inside the functions that need them.
"""

from __future__ import annotations

from typing import Any, Mapping


class CompatError(RuntimeError):
    """The installed TensorFlow/Keras no longer has an internal TL Studio relies on."""


def _missing(what: str, error: Exception) -> CompatError:
    import keras

    return CompatError(
        f"This Keras ({keras.__version__}) has no {what}, which TL Studio relies on "
        f"({type(error).__name__}: {error}). Install a Keras version TL Studio supports (see pyproject.toml)."
    )


def keras_history(tensor: Any) -> tuple[Any, int, int]:
    """``(operation, node_index, tensor_index)``: the layer call that produced a symbolic tensor.

    ``operation`` is the layer, ``node_index`` which of its calls, and
    ``tensor_index`` which of that call's outputs ``tensor`` is.
    """
    try:
        operation, node_index, tensor_index = tensor._keras_history
    except AttributeError as error:
        raise _missing("KerasTensor._keras_history", error) from None
    return operation, int(node_index), int(tensor_index)


def producer(tensor: Any) -> Any:
    """The layer (operation) whose call produced ``tensor``."""
    return keras_history(tensor)[0]


def inbound_nodes(operation: Any) -> list[Any]:
    """The calls of a layer, in call order (each a Keras ``Node``)."""
    try:
        return operation._inbound_nodes
    except AttributeError as error:
        raise _missing("Operation._inbound_nodes", error) from None


def call_node(tensor: Any) -> Any:
    """The layer call (``Node``) that produced ``tensor``; its ``input_tensors`` are what it read."""
    operation, node_index, _ = keras_history(tensor)
    return inbound_nodes(operation)[node_index]


def all_layers(layer: Any, include_self: bool = True, recursive: bool = True) -> list[Any]:
    """``layer`` and every layer nested inside it (models in models included), depth first."""
    try:
        flatten = layer._flatten_layers
    except AttributeError as error:
        raise _missing("Layer._flatten_layers", error) from None
    return list(flatten(include_self=include_self, recursive=recursive))


def in_multi_worker_mode(strategy: Any) -> bool:
    """Whether a ``MultiWorkerMirroredStrategy`` really spans several processes.

    With no cluster in ``TF_CONFIG`` the strategy runs as a local one and this
    is False.
    """
    try:
        check = strategy.extended._in_multi_worker_mode
    except AttributeError as error:
        raise _missing("StrategyExtended._in_multi_worker_mode", error) from None
    return bool(check())


def detach_strategy(model: Any) -> None:
    """Make a model built under a strategy's scope run ``predict`` outside that strategy.

    Keras keeps the strategy a model was built under and distributes
    ``predict`` with it; across workers that shards the images, while each
    worker needs every prediction.
    """
    if not hasattr(model, "_distribute_strategy"):
        raise _missing("Model._distribute_strategy", AttributeError("_distribute_strategy"))
    model._distribute_strategy = None


def configure_coordination_service(leader: str, register_timeout_ms: int, jobs: Mapping[str, int]) -> bool:
    """Configure TensorFlow's cluster coordination service with a registration timeout.

    ``leader`` is the task that runs the service (``/job:chief/replica:0/task:0``),
    ``jobs`` maps each job name to its number of tasks. Returns False (and
    changes nothing) when this TensorFlow has no such internals.
    """
    try:
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
        from tensorflow.python.eager import context
    except ImportError:
        return False
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=leader,
        cluster_register_timeout_in_ms=int(register_timeout_ms),
        coordinated_jobs=[
            coordination_config_pb2.CoordinatedJob(name=job, num_tasks=int(count)) for job, count in jobs.items()
        ],
    )
    return True


def coordination_service_config() -> Any:
    """The coordination service configuration of the current TensorFlow context (None when unset)."""
    from tensorflow.python.eager import context

    return context.context().coordination_service

