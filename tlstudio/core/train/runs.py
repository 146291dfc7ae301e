"""Run folders: where one training of a recipe keeps everything it produced.

A run folder holds

- ``recipe.json``  the recipe used, as a project file (open it to train again);
- ``classes.json`` the class names, in label order;
- ``history.json`` per-epoch loss, accuracy, validation loss and accuracy, learning rate;
- ``metrics.json`` the final metrics (``val_accuracy``, ``val_loss``, ``train_accuracy``, ``train_loss``, ...);
- ``model.keras``  the full classifier (preprocessing, base, head) with the best weights;
- ``log.txt``      a human-readable log of the run's events;
- ``status.json``  how the run ended: ``finished``, ``stopped`` (on request),
  ``interrupted`` (with the reason) or ``running``;
- ``checkpoint.npz`` what a resumed run continues from, while the run is not finished
  (see :mod:`tlstudio.core.train.checkpoint`);
- ``skipped.json`` the images that could not be decoded and were left out, if any.

Training writes ``model.keras`` (the best weights so far), ``history.json``,
``metrics.json`` and the checkpoint at the end of every epoch, each file whole
(a temporary file, flushed to disk, then renamed), so an error or a kill after
the first epoch leaves a run whose best model works and that can be resumed.
While it trains, the process holds a lock on ``.lock``; a folder marked
``running`` whose lock is free belongs to a process that was killed, and is
listed as interrupted.

:func:`scan_runs` lists the runs of a folder and, apart, the run folders it
cannot read (a damaged ``classes.json``, say) with the reason: one broken
folder never hides the others. This module does not import TensorFlow until a
model is loaded, so listing runs stays fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Callable

try:
    import fcntl
except ImportError:  # Windows: a running run cannot be told from a killed one
    fcntl = None  # type: ignore[assignment]

from tlstudio.core.model.model_files import check_model_file
from tlstudio.core.spec import paths
from tlstudio.core.spec.atomic import sync_folder, write_atomic
from tlstudio.core.spec.errors import ModelFileError, UserError
from tlstudio.core.spec.recipe import Recipe, load_project

RECIPE_FILE = "recipe.json"
CLASSES_FILE = "classes.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
LOG_FILE = "log.txt"
STATUS_FILE = "status.json"
CHECKPOINT_FILE = "checkpoint.npz"
SKIPPED_FILE = "skipped.json"
LOCK_FILE = ".lock"
PARTIAL_MODEL_FILE = ".partial.model.keras"
RUN_FILES = (RECIPE_FILE, CLASSES_FILE, HISTORY_FILE, METRICS_FILE, MODEL_FILE, LOG_FILE, STATUS_FILE,
             CHECKPOINT_FILE, SKIPPED_FILE, LOCK_FILE, PARTIAL_MODEL_FILE)
"""Every file a run writes into its folder: the only files training ever deletes there."""

FINISHED = "finished"
STOPPED = "stopped"
INTERRUPTED = "interrupted"
RUNNING = "running"
KILLED_REASON = "the training process ended without finishing (killed, crashed or the computer stopped)"


@dataclass(frozen=True)
class Run:
    """One finished (or stopped) training, read back from its folder."""

    path: Path
    recipe: Recipe
    classes: tuple[str, ...]
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = FINISHED
    reason: str = ""

    @property
    def name(self) -> str:
        """The folder's name, which is how runs are told apart in lists."""
        return self.path.name

    @property
    def state_text(self) -> str:
        """How the run ended, for lists: ``finished``, ``interrupted: REASON``, ``stopped: REASON``, ``running``."""
        return f"{self.status}: {self.reason}" if self.reason else self.status

    @property
    def resumable(self) -> bool:
        """Whether ``tlstudio train --resume`` can continue this run."""
        return self.status in (INTERRUPTED, STOPPED)

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
        check_model_file(self.model_path)  # a run folder can come from anyone: read it as data first
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


@dataclass(frozen=True)
class BrokenRun:
    """A run folder that cannot be read, and why (one line)."""

    path: Path
    reason: str

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class RunListing:
    """What :func:`scan_runs` found: the readable runs, newest first, and the broken run folders."""

    runs: list[Run]
    broken: list[BrokenRun]


def save_model_atomically(
    model: Any, path: Path, publish: Callable[[Callable[[], None]], None] | None = None
) -> Path:
    """``model.save(path)`` whole or not at all: saved beside it under a temporary name, flushed, then renamed.

    With ``publish``, the rename is ``publish(rename)``'s to do (with what must happen together with it).
    """
    partial = path.with_name(PARTIAL_MODEL_FILE)

    def rename() -> None:
        os.replace(partial, path)
        sync_folder(path.parent)

    try:
        model.save(partial)
        with open(partial, "rb") as stream:
            os.fsync(stream.fileno())
        (publish or (lambda done: done()))(rename)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def remove_partial_files(folder: Path) -> None:
    """Remove the half-written files a killed run left: temporary copies of the run's own files only."""
    for name in RUN_FILES:
        for leftover in folder.glob(f".{name}.*.tmp"):
            leftover.unlink(missing_ok=True)
    (folder / PARTIAL_MODEL_FILE).unlink(missing_ok=True)


def write_json(path: str | os.PathLike[str], value: Any) -> Path:
    """Write ``value`` as indented JSON atomically (temporary file, flush, rename)."""
    data = (json.dumps(value, indent=2, allow_nan=True) + "\n").encode("utf-8")
    return write_atomic(path, data)


def write_status(folder: Path, status: str, reason: str = "") -> None:
    """Record how the run in ``folder`` stands (see the module docstring)."""
    write_json(folder / STATUS_FILE, {"status": status, "reason": reason,
                                      "updated": datetime.now().isoformat(timespec="seconds")})


class RunLock:
    """The lock a training process holds on its run folder; the kernel frees it when the process dies."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self._stream: IO[bytes] | None = None

    def acquire(self) -> bool:
        """Take the lock; False when another process holds it."""
        if fcntl is None:
            return True
        stream = open(self.path, "ab")
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            stream.close()
            return False
        self._stream = stream
        return True

    def release(self) -> None:
        """Give the lock up and remove its file (a folder without one is not being trained)."""
        if self._stream is not None:
            self.path.unlink(missing_ok=True)
            self._stream.close()
            self._stream = None


def _is_locked(folder: Path) -> bool:
    """Whether a live process holds ``folder``'s run lock (assumed so where locks are not available)."""
    if fcntl is None or not (folder / LOCK_FILE).exists():
        return fcntl is None
    lock = RunLock(folder)
    if lock.acquire():
        lock.release()
        return False
    return True


def _read_status(folder: Path) -> tuple[str, str]:
    """``(status, reason)`` of a run folder; a folder without ``status.json`` is an older finished run."""
    path = folder / STATUS_FILE
    if not path.is_file():
        return FINISHED, ""
    record = _read_json(path, "status")
    if not isinstance(record, dict) or record.get("status") not in (FINISHED, STOPPED, INTERRUPTED, RUNNING):
        raise UserError(f"The run's status {str(path)!r} must be a JSON object with a known 'status'.")
    status, reason = record["status"], str(record.get("reason") or "")
    if status == RUNNING and not _is_locked(folder):
        return INTERRUPTED, KILLED_REASON
    return status, reason


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"Cannot read the run's {what} {str(path)!r}: {error.strerror or error}.") from None
    except UnicodeDecodeError:
        raise UserError(f"The run's {what} {str(path)!r} is not UTF-8 text.") from None
    except json.JSONDecodeError as error:
        raise UserError(
            f"The run's {what} {str(path)!r} is not valid JSON (line {error.lineno}: {error.msg})."
        ) from None


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a run folder with a model to use (recipe, classes and metrics present)."""
    folder = Path(path)
    return all((folder / name).is_file() for name in (RECIPE_FILE, CLASSES_FILE, METRICS_FILE))


def looks_like_run(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds files a training run writes (it may be unfinished or damaged)."""
    folder = Path(path)
    return any((folder / name).is_file() for name in (RECIPE_FILE, CLASSES_FILE, METRICS_FILE, STATUS_FILE))


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read a run folder; UserError when ``path`` is not one."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"No run folder at {str(folder)!r}. Give the folder a training run wrote.")
    status, reason = _read_status(folder)
    required = (RECIPE_FILE, CLASSES_FILE) if (folder / STATUS_FILE).is_file() else (
        RECIPE_FILE, CLASSES_FILE, METRICS_FILE)
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"{str(folder)!r} is not a TL Studio run folder: it lacks {', '.join(missing)}. "
            f"A run folder holds {RECIPE_FILE}, {CLASSES_FILE}, {HISTORY_FILE}, {METRICS_FILE}, "
            f"{MODEL_FILE} and {LOG_FILE}."
        )
    classes = _read_json(folder / CLASSES_FILE, "class list")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise UserError(f"The run's class list {str(folder / CLASSES_FILE)!r} must be a JSON list of names.")
    history_path, metrics_path = folder / HISTORY_FILE, folder / METRICS_FILE
    history = _read_json(history_path, "history") if history_path.is_file() else {}
    if not isinstance(history, dict) or not all(
        isinstance(values, list) and all(_is_number(v) for v in values) for values in history.values()
    ):
        raise UserError(f"The run's history {str(history_path)!r} must map names to lists of numbers.")
    metrics = _read_json(metrics_path, "metrics") if metrics_path.is_file() else {}
    if not isinstance(metrics, dict) or not all(_is_number(v) for v in metrics.values()):
        raise UserError(f"The run's metrics {str(metrics_path)!r} must map names to numbers.")
    return Run(
        path=folder,
        recipe=load_project(folder / RECIPE_FILE),
        classes=tuple(classes),
        history=dict(history),
        metrics=dict(metrics),
        status=status,
        reason=reason,
    )


def resumable_run(path: str | os.PathLike[str]) -> Run:
    """The run in ``path`` if it can be resumed (interrupted or stopped); UserError saying why not otherwise."""
    run = load_run(path)
    if not run.resumable:
        raise UserError(
            f"The run {str(run.path)!r} is {run.state_text}; only an interrupted or stopped run can be resumed. "
            "Train the recipe again for a new run."
        )
    return run


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def list_runs(root: str | os.PathLike[str] | None = None) -> list[Run]:
    """The readable runs in ``root`` (default: the runs folder), newest first; see :func:`scan_runs`."""
    return scan_runs(root).runs


def scan_runs(root: str | os.PathLike[str] | None = None) -> RunListing:
    """The runs in ``root`` (default: the runs folder), newest first, and the run folders that cannot be read.

    A folder holding none of a run's files is not a run and is left out. This
    never raises for what is inside the folders.
    """
    folder = Path(root) if root is not None else paths.runs_dir()
    try:
        children = sorted(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        children = []
    found, broken = [], []
    for child in children:
        try:
            if not child.is_dir() or not looks_like_run(child):
                continue
            found.append(load_run(child))
        except (UserError, OSError, ValueError) as error:
            broken.append(BrokenRun(child, _one_line(error)))
    return RunListing(sorted(found, key=_newest, reverse=True), broken)


def _newest(run: Run) -> tuple[float, str]:
    for name in (METRICS_FILE, STATUS_FILE, RECIPE_FILE):
        try:
            return (run.path / name).stat().st_mtime, run.name
        except OSError:
            continue
    return 0.0, run.name


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


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
