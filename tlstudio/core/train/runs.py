"""Run folders: where one training of a recipe keeps everything it produced.

A run folder holds

- ``recipe.json``  the recipe used, as a project file (open it to train again);
- ``classes.json`` the class names, in label order;
- ``history.json`` per-epoch loss, accuracy, validation loss and accuracy, learning rate;
- ``metrics.json`` the final metrics (``val_accuracy``, ``val_loss``, ``train_accuracy``, ``train_loss``, ...);
- ``model.keras``  the full classifier (preprocessing, base, head) with the best weights;
- ``log.txt``      a human-readable log of the run's events.

A folder is a run once ``metrics.json`` is written, which training does last:
a run that failed or was stopped before its first epoch ended is not listed.
This module does not import TensorFlow until a model is loaded, so listing
runs stays fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tlstudio.core.spec import paths
from tlstudio.core.spec.errors import ModelFileError, UserError
from tlstudio.core.spec.recipe import Recipe, load_project

RECIPE_FILE = "recipe.json"
CLASSES_FILE = "classes.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
LOG_FILE = "log.txt"


@dataclass(frozen=True)
class Run:
    """One finished (or stopped) training, read back from its folder."""

    path: Path
    recipe: Recipe
    classes: tuple[str, ...]
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The folder's name, which is how runs are told apart in lists."""
        return self.path.name

    @property
    def model_path(self) -> Path:
        """Where the run's best full classifier is saved."""
        return self.path / MODEL_FILE

    def load_model(self):
        """The trained classifier, loaded in Keras' safe mode and not compiled.

        It takes raw RGB pixels 0..255 at the recipe's input size and outputs
        class probabilities in the order of ``classes``.
        """
        import keras

        import tlstudio.core.model.preprocess  # noqa: F401  registers the Preprocess layer for loading

        if not self.model_path.is_file():
            raise ModelFileError(
                f"The run folder {str(self.path)!r} has no {MODEL_FILE}: the run stopped before saving "
                "a model. Train again."
            )
        try:
            return keras.saving.load_model(self.model_path, compile=False, safe_mode=True)
        except (OSError, ValueError, TypeError) as error:
            raise ModelFileError(
                f"Cannot load the model of run {str(self.path)!r} ({MODEL_FILE}): {error}. "
                "The file may be damaged or written by an incompatible version; train again."
            ) from None


def make_folder(folder: Path, what: str, advice: str = "Choose a folder you can write to.") -> Path:
    """Create ``folder`` and its parents if missing; a :class:`UserError` naming ``what`` and ``folder`` if that fails."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"Cannot create {what} {str(folder)!r}: {error.strerror or error}. {advice}") from None
    return folder


def write_json(path: str | os.PathLike[str], value: Any) -> Path:
    """Write ``value`` as indented JSON atomically (temporary file, then rename)."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    os.replace(temporary, target)
    return target


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"Cannot read the run's {what} {str(path)!r}: {error.strerror or error}.") from None
    except json.JSONDecodeError as error:
        raise UserError(
            f"The run's {what} {str(path)!r} is not valid JSON (line {error.lineno}: {error.msg})."
        ) from None


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a complete run folder (recipe, classes and metrics present)."""
    folder = Path(path)
    return all((folder / name).is_file() for name in (RECIPE_FILE, CLASSES_FILE, METRICS_FILE))


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read a run folder; UserError when ``path`` is not one."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"No run folder at {str(folder)!r}. Give the folder a training run wrote.")
    missing = [name for name in (RECIPE_FILE, CLASSES_FILE, METRICS_FILE) if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"{str(folder)!r} is not a TL Studio run folder: it lacks {', '.join(missing)}. "
            f"A run folder holds {RECIPE_FILE}, {CLASSES_FILE}, {HISTORY_FILE}, {METRICS_FILE}, "
            f"{MODEL_FILE} and {LOG_FILE}."
        )
    classes = _read_json(folder / CLASSES_FILE, "class list")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise UserError(f"The run's class list {str(folder / CLASSES_FILE)!r} must be a JSON list of names.")
    history_path = folder / HISTORY_FILE
    history = _read_json(history_path, "history") if history_path.is_file() else {}
    metrics = _read_json(folder / METRICS_FILE, "metrics")
    return Run(
        path=folder,
        recipe=load_project(folder / RECIPE_FILE),
        classes=tuple(classes),
        history=dict(history),
        metrics=dict(metrics),
    )


def list_runs(root: str | os.PathLike[str] | None = None) -> list[Run]:
    """The runs in ``root`` (default: the runs folder), newest first.

    Folders that are not complete runs, or that cannot be read, are left out.
    """
    folder = Path(root) if root is not None else paths.runs_dir()
    if not folder.is_dir():
        return []
    runs = []
    for child in folder.iterdir():
        if child.is_dir() and is_run_dir(child):
            try:
                runs.append(load_run(child))
            except UserError:
                continue
    return sorted(runs, key=lambda run: ((run.path / METRICS_FILE).stat().st_mtime, run.name), reverse=True)


def new_run_dir(parent: str | os.PathLike[str] | None = None) -> Path:
    """Create and return a new, empty run folder named after the current time.

    ``parent`` defaults to the runs folder in the user's data directory. Two
    runs started in the same second get ``-2``, ``-3``, ... suffixes.
    """
    folder = make_folder(
        Path(parent) if parent is not None else paths.runs_dir(),
        "the runs folder",
        "Choose an output folder you can write to.",
    )
    stem = datetime.now().strftime("run-%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        candidate = folder / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise UserError(f"Cannot create a new run folder in {str(folder)!r}: too many runs named {stem}.")
