"""The checkpoint a run writes at every epoch end, and reading it back to resume.

``checkpoint.npz`` in the run folder holds, in one file written whole (see
:func:`tlstudio.core.spec.atomic.write_atomic_with`):

- the loop state (:class:`tlstudio.core.train.callbacks.LoopState`): phase,
  epochs done in it and in the run, steps, history, early stopping's counter,
  the best validation loss, its epoch and metrics;
- the current weights of the head layers and of the fine-tuned base layers,
  by layer name;
- the optimizer's variables (step count, moments) and the best weights so far;
- the feature-cache key of the frozen part, the classes, and the images skipped
  as unreadable, so a resumed run checks it trains the same thing.

It is read with ``allow_pickle=False``: a checkpoint is data, never code.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlstudio.core.spec import anatomy
from tlstudio.core.spec import atomic
from tlstudio.core.spec.errors import UserError
from tlstudio.core.train import runs
from tlstudio.core.train.callbacks import Best, LoopState

VERSION = 1
_STATE = "state"


@dataclass
class Checkpoint:
    """What a resumed run starts from."""

    phase: str
    phase_done: bool
    loop: LoopState
    feature_key: str | None
    classes: tuple[str, ...]
    skipped: list[tuple[str, str]]
    fine_tuned: list[str]
    layers: dict[str, list[np.ndarray]] = field(default_factory=dict)
    optimizer: list[np.ndarray] = field(default_factory=list)
    best_values: list[np.ndarray] = field(default_factory=list)


def save(folder: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` into the run folder, whole or not at all."""
    loop = checkpoint.loop
    state = {
        "version": VERSION,
        "phase": checkpoint.phase,
        "phase_done": checkpoint.phase_done,
        "loop": {
            "epoch": loop.epoch, "step": loop.step, "head_epochs": loop.head_epochs,
            "phase_epoch": loop.phase_epoch, "phase_best": loop.phase_best, "waited": loop.waited,
            "stopped_early": loop.stopped_early, "history": loop.history,
        },
        "best": {"val_loss": loop.best.val_loss, "epoch": loop.best.epoch, "metrics": loop.best.metrics},
        "feature_key": checkpoint.feature_key,
        "classes": list(checkpoint.classes),
        "skipped": [list(pair) for pair in checkpoint.skipped],
        "fine_tuned": list(checkpoint.fine_tuned),
        "layers": {name: len(values) for name, values in checkpoint.layers.items()},
    }
    arrays = {_STATE: np.frombuffer(json.dumps(state).encode("utf-8"), dtype=np.uint8)}
    for name, values in checkpoint.layers.items():
        for index, value in enumerate(values):
            arrays[f"layer/{name}/{index}"] = np.asarray(value)
    arrays.update({f"optimizer/{i}": np.asarray(v) for i, v in enumerate(checkpoint.optimizer)})
    arrays.update({f"best/{i}": np.asarray(v) for i, v in enumerate(checkpoint.best_values)})
    atomic.write_atomic_with(folder / runs.CHECKPOINT_FILE, lambda stream: np.savez(stream, **arrays))


def load(folder: Path) -> Checkpoint | None:
    """The checkpoint in a run folder; None when the run has none (it ended before its first epoch)."""
    path = folder / runs.CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        state = json.loads(arrays.pop(_STATE).tobytes().decode("utf-8"))
        if state.get("version") != VERSION:
            raise ValueError(f"version {state.get('version')!r}, expected {VERSION}")
        loop_state = state["loop"]
        loop = LoopState(
            epoch=int(loop_state["epoch"]), step=int(loop_state["step"]),
            head_epochs=int(loop_state["head_epochs"]), phase_epoch=int(loop_state["phase_epoch"]),
            phase_best=float(loop_state["phase_best"]), waited=int(loop_state["waited"]),
            stopped_early=bool(loop_state["stopped_early"]),
            history={key: [float(v) for v in values] for key, values in loop_state["history"].items()},
            best=Best(val_loss=float(state["best"]["val_loss"]), epoch=int(state["best"]["epoch"]),
                      metrics={k: float(v) for k, v in state["best"]["metrics"].items()}),
        )
        layers = {name: [arrays[f"layer/{name}/{i}"] for i in range(count)] for name, count in state["layers"].items()}
        return Checkpoint(
            phase=str(state["phase"]),
            phase_done=bool(state["phase_done"]),
            loop=loop,
            feature_key=state["feature_key"],
            classes=tuple(state["classes"]),
            skipped=[(str(p), str(r)) for p, r in state["skipped"]],
            fine_tuned=[str(name) for name in state["fine_tuned"]],
            layers=layers,
            optimizer=_numbered(arrays, "optimizer/"),
            best_values=_numbered(arrays, "best/"),
        )
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, io.UnsupportedOperation) as error:
        raise UserError(
            f"The checkpoint {str(path)!r} cannot be read ({error}); the run cannot be resumed. "
            "Its best model so far (model.keras) can still be used, or train again."
        ) from None


def layer_values(model, fine_tuned: list[str]) -> dict[str, list[np.ndarray]]:
    """The current weights of the layers training changes: the head's and the fine-tuned base layers."""
    return {name: [v.numpy() for v in layer.weights] for name, layer in _trained_layers(model, fine_tuned).items()}


def restore(point: Checkpoint, model, fine_tuned: list[str], optimizer, watched: list) -> None:
    """Put ``point``'s weights, optimizer state and best weights into a phase about to continue.

    ``watched`` are the variables whose best values the phase keeps. A
    checkpoint that does not fit (other fine-tuned layers, other shapes) is
    refused with a UserError before anything is changed.
    """
    if point.fine_tuned != fine_tuned:
        raise UserError(
            f"The checkpoint fine-tuned {', '.join(point.fine_tuned) or 'no layers'} but the recipe now "
            f"unfreezes {', '.join(fine_tuned) or 'none'}; the run cannot be resumed. Train again."
        )
    layers = _trained_layers(model, fine_tuned)
    if set(layers) != set(point.layers):
        raise UserError("The checkpoint's layers do not match the model built from the run's recipe; "
                        "the run cannot be resumed. Train again.")
    _check_shapes(list(optimizer.variables), point.optimizer, "optimizer state")
    _check_shapes(watched, point.best_values, "best weights")
    for name, layer in layers.items():
        assign(list(layer.weights), point.layers[name], f"weights of {name}")
    assign(list(optimizer.variables), point.optimizer, "optimizer state")


def _trained_layers(model, fine_tuned: list[str]) -> dict:
    """The head layers and the fine-tuned base layers, by name (``base/NAME`` for the latter)."""
    kept = {layer.name: layer for layer in anatomy.head_layers(model)}
    if fine_tuned:
        base = model.get_layer(anatomy.BASE_NAME)
        kept.update({f"{anatomy.BASE_NAME}/{name}": base.get_layer(name) for name in fine_tuned})
    return kept


def assign(variables: list, values: list[np.ndarray], what: str) -> None:
    """Set ``variables`` to ``values``, refusing a checkpoint that does not fit the model."""
    _check_shapes(variables, values, what)
    for variable, value in zip(variables, values):
        variable.assign(value)


def _check_shapes(variables: list, values: list[np.ndarray], what: str) -> None:
    if [tuple(v.shape) for v in variables] != [tuple(np.shape(v)) for v in values]:
        raise UserError(
            f"The checkpoint's {what} do not fit the model built from the run's recipe "
            f"({len(values)} arrays for {len(variables)} variables); the run cannot be resumed. Train again."
        )


def _numbered(arrays: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    count = sum(1 for name in arrays if name.startswith(prefix))
    return [arrays[f"{prefix}{i}"] for i in range(count)]
