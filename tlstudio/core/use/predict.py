"""Classify image files with a trained model: a run folder or an exported ``.keras``.

Folders are expanded recursively; which files are images is decided by their
content, as when scanning a dataset. A file that cannot be read gets a
:class:`Prediction` with ``error`` set instead of stopping the whole batch, so
one bad photo among thousands costs one line in the results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from tlstudio.core.model.model_files import check_model_file
from tlstudio.core.spec.errors import Cancelled, ImageError, ModelFileError, UserError
from tlstudio.core.data.verify import name_some, read_summary
from tlstudio.core.spec.events import Message, OnEvent, Progress, ShouldStop, ignore_event, never_stop

LABELS_FILE = "labels.txt"
BATCH_SIZE = 32
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
"""Names that claim to be images: such a file in a folder is reported when it cannot be read."""


@dataclass(frozen=True)
class Prediction:
    """The result for one file: ``top`` holds (class name, probability), best first.

    When the file cannot be read, ``top`` is empty and ``error`` says why;
    otherwise ``error`` is "".
    """

    path: str
    top: tuple[tuple[str, float], ...]
    error: str = ""


@dataclass
class Predictor:
    """A loaded classifier ready to predict: raw RGB 0..255 in, probabilities per class out."""

    model: object
    classes: tuple[str, ...]
    input_size: int


def load_predictor(model_or_run_path: str | os.PathLike[str]) -> Predictor:
    """Load a run folder, an export folder, or a ``.keras`` file with ``labels.txt`` beside it.

    Raises UserError when the path is none of these, ModelFileError when the
    model cannot be loaded or its labels do not match its outputs.
    """
    from tlstudio.core.train import runs

    path = Path(model_or_run_path).expanduser()
    if path.is_dir() and runs.is_run_dir(path):
        run = runs.load_run(path)
        return _predictor(run.load_model(), run.classes, path)
    if path.is_dir() and (path / "model.keras").is_file():
        path = path / "model.keras"
    if path.is_file() and path.suffix == ".keras":
        return _predictor(_load_keras(path), _read_labels(path.parent / LABELS_FILE, path), path)
    if not path.exists():
        raise UserError(f"No model or run at {str(path)!r}. Check the path.")
    raise UserError(
        "Cannot predict with this: give a run folder, an export folder holding model.keras and labels.txt, "
        f"or a .keras file with labels.txt beside it. Received: {str(path)!r}"
    )


def predict_files(
    predictor: Predictor,
    paths: Iterable[str | os.PathLike[str]],
    top_k: int = 3,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
    batch_size: int = BATCH_SIZE,
) -> list[Prediction]:
    """Predict every image in ``paths`` (files, or folders searched recursively).

    Results follow the order of ``paths``, folders' files sorted by name. A
    missing or unreadable file gets ``error`` set; nothing raises for one bad
    file. Progress events have task "predict"; Cancelled is raised between
    batches when ``should_stop()`` turns true.
    """
    if top_k < 1:
        raise UserError(f"top_k must be at least 1. Received: top_k={top_k!r}")
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1. Received: batch_size={batch_size!r}")
    files = expand_paths(paths)
    results: dict[int, Prediction] = {}
    total = len(files)
    for start in range(0, total, batch_size):
        if should_stop():
            raise Cancelled("Prediction cancelled.")
        on_event(Progress("predict", start, total, f"Predicting images {start + 1}-{min(start + batch_size, total)}"))
        images, indices = [], []
        for index in range(start, min(start + batch_size, total)):
            path, error = files[index]
            if not error:
                try:
                    images.append(_load(path, predictor.input_size))
                    indices.append(index)
                    continue
                except ImageError as failure:
                    error = failure.reason
                except MemoryError:
                    error = "too large to decode (out of memory)"
            results[index] = Prediction(path, (), error)
        if images:
            probabilities = _probabilities(predictor, np.stack(images))
            for index, row in zip(indices, probabilities):
                results[index] = Prediction(files[index][0], _top(row, predictor.classes, top_k))
    predictions = [results[index] for index in range(total)]
    failed = [f"{p.path} ({p.error})" for p in predictions if p.error]
    if failed:
        on_event(Message(f"{summary_line(predictions)}; left out: {name_some(failed)}.", "warning"))
    on_event(Progress("predict", total, total, "Done"))
    return predictions


def summary_line(predictions: list[Prediction]) -> str:
    """"4 classified, 2 could not be read" for a list of predictions."""
    failed = sum(1 for p in predictions if p.error)
    return read_summary(len(predictions) - failed, failed)


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[str, str]]:
    """The files to predict, each with "" or the reason it cannot be used.

    Files named explicitly are always included. Inside folders, hidden files
    and folders are skipped, symlinked folders are not followed (no loops), and
    a file is included when its content is an image or its name claims one.
    """
    from tlstudio.core.data.images import probe_image

    files: list[tuple[str, str]] = []
    for entry in paths:
        path = Path(entry).expanduser()
        if path.is_dir():
            for root, folders, names in os.walk(path):
                folders[:] = sorted(f for f in folders if not f.startswith(".") and f != "__MACOSX")
                for name in sorted(names):
                    if name.startswith("."):
                        continue
                    candidate = Path(root) / name
                    try:
                        probe_image(candidate)
                    except ImageError:
                        if candidate.suffix.lower() not in IMAGE_SUFFIXES:
                            continue
                    files.append((str(candidate), ""))
        elif path.is_file():
            files.append((str(path), ""))
        else:
            files.append((str(path), "no such file"))
    return files


def _load(path: str, size: int) -> np.ndarray:
    from tlstudio.core.data.images import load_rgb

    try:
        return load_rgb(path, size)
    except OSError as error:
        raise ImageError(path, f"cannot read: {error.strerror or error}") from None


def _probabilities(predictor: Predictor, images: np.ndarray) -> np.ndarray:
    return np.asarray(predictor.model(images.astype(np.float32), training=False), dtype=np.float64)


def _top(row: np.ndarray, classes: tuple[str, ...], k: int) -> tuple[tuple[str, float], ...]:
    order = np.argsort(-row, kind="stable")[:k]
    return tuple((classes[i], float(row[i])) for i in order)


def _load_keras(path: Path):
    import keras

    import tlstudio.core.model.preprocess  # noqa: F401  registers the Preprocess layer for loading

    check_model_file(path)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except (OSError, ValueError, TypeError) as error:
        raise ModelFileError(
            f"Cannot load the model {str(path)!r}: {error}. Use a .keras file exported by TL Studio "
            "or a run folder."
        ) from None


def _read_labels(labels: Path, model_path: Path) -> tuple[str, ...]:
    try:
        lines = labels.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ModelFileError(
            f"The model {str(model_path)!r} has no {LABELS_FILE} beside it, so its outputs have no class names. "
            f"Put the export's {LABELS_FILE} (one class name per line, in output order) in the same folder."
        ) from None
    except OSError as error:
        raise ModelFileError(f"Cannot read {str(labels)!r}: {error.strerror or error}.") from None
    classes = tuple(line.strip() for line in lines if line.strip())
    if not classes:
        raise ModelFileError(f"{str(labels)!r} holds no class names; it needs one name per line.")
    return classes


def _predictor(model, classes: tuple[str, ...], source: Path) -> Predictor:
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise ModelFileError(
            f"The model {str(source)!r} must take square RGB images of a fixed size, input shape "
            f"(None, N, N, 3). Received: input shape {shape}"
        )
    outputs = model.output_shape[-1]
    if outputs != len(classes):
        raise ModelFileError(
            f"The model {str(source)!r} has {outputs} outputs but {len(classes)} class names "
            f"({', '.join(classes)}). Use the labels that were exported with this model."
        )
    return Predictor(model=model, classes=tuple(classes), input_size=int(shape[1]))
