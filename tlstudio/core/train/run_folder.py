"""A run folder's life: where a run may write, what it leaves after an error, where a resume starts.

The rule for output folders: a run writes into a new or empty folder only.
An existing folder with files in it is refused (with what to do instead), and
after an error before the first epoch ended only the files a run writes are
removed (:data:`tlstudio.core.train.runs.RUN_FILES`), and the folder itself only
when the run created it. After finished epochs nothing is removed: the run is
marked interrupted (or stopped) and can be resumed.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tlstudio.core.data.dataset import Dataset
from tlstudio.core.spec.errors import Cancelled, DataError, TrainingError, UserError
from tlstudio.core.spec.events import Message, OnEvent
from tlstudio.core.train import checkpoint, runs
from tlstudio.core.train.run_log import RunLog


def save_epoch(folder: Path, metrics: dict[str, float] | None, point: checkpoint.Checkpoint) -> None:
    """At an epoch end: history, metrics (None: the folder holds no model for them to describe yet), skipped
    files, checkpoint. A full or read-only disk is a TrainingError that says how to continue."""
    with epoch_saving(folder, point.loop.epoch):
        runs.write_json(folder / runs.HISTORY_FILE, point.loop.history)
        if metrics is not None:
            runs.write_json(folder / runs.METRICS_FILE, metrics)
        _write_skipped(folder, point.skipped)
        checkpoint.save(folder, point)


@contextlib.contextmanager
def epoch_saving(folder: Path, epoch: int) -> Iterator[None]:
    """Turn an OSError while saving epoch ``epoch`` (its files or its best model) into a TrainingError that
    says how to continue."""
    try:
        yield
    except OSError as error:
        raise TrainingError(
            f"Training stopped: cannot save epoch {epoch} into the run folder {str(folder)!r} "
            f"({error.strerror or error}). Free some disk space, then continue with "
            f"'tlstudio train --resume {folder}'."
        ) from None


def save_end(
    folder: Path, model: Any, history: dict, metrics: dict[str, float], skipped: list, stopped: str | None
) -> None:
    """The run's final model, history and metrics; a finished run drops its checkpoint, a stopped one keeps it."""
    try:
        runs.save_model_atomically(model, folder / runs.MODEL_FILE)
        runs.write_json(folder / runs.HISTORY_FILE, history)
        runs.write_json(folder / runs.METRICS_FILE, metrics)
        _write_skipped(folder, skipped)
        if stopped is not None:
            runs.write_status(folder, runs.STOPPED, stopped)
        else:
            runs.write_status(folder, runs.FINISHED)
            (folder / runs.CHECKPOINT_FILE).unlink(missing_ok=True)
    except OSError as error:
        raise TrainingError(
            f"Training stopped: cannot save the run into {str(folder)!r} ({error.strerror or error}). "
            f"Free some disk space, then continue with 'tlstudio train --resume {folder}'."
        ) from None


def _write_skipped(folder: Path, skipped: list) -> None:
    if skipped:
        runs.write_json(folder / runs.SKIPPED_FILE, [list(pair) for pair in skipped])


@dataclass
class Start:
    """Where a resumed run starts: its folder and checkpoint (None: from the beginning)."""

    folder: Path
    point: checkpoint.Checkpoint | None
    classes: tuple[str, ...]


def resume_point(folder: Path, out_dir: str | Path | None) -> Start:
    """What a resumed run continues from; UserError when ``folder`` is not a run that can be resumed."""
    if out_dir is not None:
        raise UserError("A resumed run continues in its own folder; give either resume or an output folder, not both.")
    run = runs.resumable_run(folder)
    point = checkpoint.load(run.path)
    if point is not None and tuple(point.classes) != run.classes:
        raise UserError(f"The checkpoint of {str(folder)!r} does not match its classes.json; it cannot be resumed.")
    return Start(run.path, point, run.classes)


def same_data(dataset: Dataset, start: Start) -> Dataset:
    """The scanned data without the images the run skipped; DataError when its classes are not the run's."""
    if tuple(dataset.classes) != start.classes:
        raise DataError(
            f"The data folders now hold the classes {', '.join(dataset.classes)}, but the run was trained on "
            f"{', '.join(start.classes)}; it cannot be resumed with other classes. Train a new run instead."
        )
    if start.point is None or not start.point.skipped:
        return dataset
    gone = {path for path, _ in start.point.skipped}
    return dataclasses.replace(
        dataset,
        train=tuple(item for item in dataset.train if item.path not in gone),
        val=tuple(item for item in dataset.val if item.path not in gone),
    )


def mark_interrupted(run_dir: Path, error: BaseException, done: int, log: RunLog, report: OnEvent) -> None:
    """Mark a run that ended by an error or a stop after finished epochs; it keeps its best model and checkpoint."""
    if isinstance(error, Cancelled):
        status, reason = runs.STOPPED, f"stopped on request after epoch {done}"
    elif isinstance(error, KeyboardInterrupt):
        status, reason = runs.INTERRUPTED, f"interrupted (Ctrl+C) after epoch {done}"
    else:
        text = str(error).strip().splitlines()
        detail = text[0] if text else ""
        if not isinstance(error, UserError):
            detail = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
        status, reason = runs.INTERRUPTED, f"{detail} (after epoch {done})"
    kept = "Its best model so far is kept and works; continue" if done else "No epoch has finished yet; start"
    note = (f"The run {run_dir.name} ended early ({reason}). {kept} it with 'tlstudio train --resume {run_dir}' "
            "or the Runs page's Resume.")
    log.write(f"[warning] {note}")
    report(Message(note, "warning"))
    try:
        runs.write_status(run_dir, status, reason)
    except OSError:
        pass  # without a status the free lock marks it interrupted


def check_out_dir(out_dir: str | Path | None) -> Path | None:
    """Refuse, before any work, an output folder that already holds files: TL Studio never writes over them."""
    if out_dir is None:
        return None
    target = Path(out_dir).expanduser()
    if target.exists() and not target.is_dir():
        raise UserError(f"The output folder {str(target)!r} is a file. Give a new or empty folder for the run.")
    try:
        used = target.is_dir() and any(target.iterdir())
    except OSError as error:
        raise UserError(f"Cannot read the output folder {str(target)!r} ({error.strerror or error}). "
                        "Give a new or empty folder you can write to.") from None
    if used and runs.looks_like_run(target):
        raise UserError(
            f"The output folder {str(target)!r} is not empty: it already holds a TL Studio run. "
            f"Continue it with 'tlstudio train --resume {target}' if it was interrupted, or choose a new folder."
        )
    if used:
        raise UserError(
            f"The output folder {str(target)!r} is not empty and is not a TL Studio run; TL Studio never writes "
            "into or deletes files it did not make. Choose a new or empty folder (or move its files elsewhere)."
        )
    return target


def discard(run_dir: Path, created: bool) -> None:
    """Leave nothing of a run that produced no model: only the files a run writes, and the folder if it made it."""
    for name in runs.RUN_FILES:
        try:
            (run_dir / name).unlink(missing_ok=True)
        except OSError:
            pass
    runs.remove_partial_files(run_dir)
    if created:
        try:
            run_dir.rmdir()
        except OSError:
            pass  # it holds files someone else put there: they stay
