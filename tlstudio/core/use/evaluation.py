"""How well a run's model does on images it did not train on, image by image.

:func:`evaluate_run` predicts every image of a run's validation split (or
its test split, when the data has a ``test/`` folder) with the run's best
model and measures accuracy, top-k accuracy, per-class precision, recall, F1
and support, the confusion matrix and the loss of each image. The split is
the one training used: the recipe's folders, validation fraction and seed.

The per-image records are what the mistakes browser shows:
:func:`mistakes` returns the misclassified and least-confident images,
worst (highest loss) first, and :func:`cell_records` the images of one
confusion-matrix cell.

Each evaluation is saved in the run folder as ``evaluation.json`` (one entry
per split), so it can be shown again without predicting, and an export puts
its summary in the model card. A file that cannot be read as an image is
left out and listed in ``skipped``; it does not stop the evaluation.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlstudio.core.use import metrics
from tlstudio.core.data.dataset import SkippedFile
from tlstudio.core.data.verify import name_some, read_summary
from tlstudio.core.spec.errors import Cancelled, DataError, ImageError, ModelFileError, UserError
from tlstudio.core.spec.events import Message, OnEvent, Progress, ShouldStop, ignore_event, never_stop

EVALUATION_FILE = "evaluation.json"
EVALUATION_VERSION = 1
SPLITS = ("val", "test")
SPLIT_NAMES = {"val": "validation", "test": "test"}
DEFAULT_TOP_K = 5
UNCERTAIN_BELOW = 0.6
"""A correct prediction whose probability is below this counts as least-confident in :func:`mistakes`."""
BATCH_SIZE = 32
LOSS_EPSILON = 1e-7
"""Probabilities are clipped to this before the log, as Keras' cross-entropy does."""


@dataclass(frozen=True)
class ImageRecord:
    """One evaluated image: its true and predicted class (indexes into the classes),
    the probability of every class and its cross-entropy loss."""

    path: str
    true: int
    predicted: int
    probabilities: tuple[float, ...]
    loss: float

    @property
    def correct(self) -> bool:
        """Whether the most probable class is the true one."""
        return self.true == self.predicted

    @property
    def confidence(self) -> float:
        """The probability of the predicted class."""
        return self.probabilities[self.predicted]


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall and F1 of one class (NaN when undefined, see :mod:`metrics`) and its image count."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True, eq=False)
class Evaluation:
    """The metrics of one split and the record of every image in it.

    ``confusion_matrix`` holds counts, rows = true class, columns = predicted
    class; ``normalised_confusion_matrix`` divides each row by its sum.
    ``top_k`` is the k of ``top_k_accuracy`` (at most the number of classes).
    """

    split: str
    classes: tuple[str, ...]
    top_k: int
    accuracy: float
    top_k_accuracy: float
    loss: float
    confusion_matrix: np.ndarray
    per_class: tuple[ClassMetrics, ...]
    records: tuple[ImageRecord, ...]
    skipped: tuple[SkippedFile, ...] = ()
    run: str = ""
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def normalised_confusion_matrix(self) -> np.ndarray:
        """Each row divided by its sum: where the images of each true class went."""
        return metrics.row_normalised(self.confusion_matrix)

    @property
    def images(self) -> int:
        """How many images were evaluated."""
        return len(self.records)

    def summary(self) -> dict[str, Any]:
        """The metrics without the per-image records, JSON-ready (NaN as null): what the model card keeps."""
        return {
            "split": self.split,
            "images": self.images,
            "classes": list(self.classes),
            "accuracy": _number(self.accuracy),
            "top_k": self.top_k,
            "top_k_accuracy": _number(self.top_k_accuracy),
            "loss": _number(self.loss),
            "per_class": [
                {
                    "name": c.name,
                    "precision": _number(c.precision),
                    "recall": _number(c.recall),
                    "f1": _number(c.f1),
                    "support": c.support,
                }
                for c in self.per_class
            ],
            "confusion_matrix": self.confusion_matrix.tolist(),
            "confusion_matrix_normalised": [
                [round(v, 6) for v in row] for row in self.normalised_confusion_matrix.tolist()
            ],
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "run": self.run,
            "created": self.created,
        }

    def to_dict(self) -> dict[str, Any]:
        """The summary and the per-image records: the form saved in ``evaluation.json``."""
        return {
            **self.summary(),
            "records": [
                {
                    "path": r.path,
                    "true": r.true,
                    "predicted": r.predicted,
                    "probabilities": list(r.probabilities),
                    "loss": r.loss,
                }
                for r in self.records
            ],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "evaluation") -> "Evaluation":
        """Read back :meth:`to_dict`'s form; UserError naming what is missing or malformed."""
        required = ("split", "classes", "top_k", "accuracy", "top_k_accuracy", "loss", "per_class",
                    "confusion_matrix", "records")
        missing = [key for key in required if key not in raw]
        if missing:
            raise UserError(
                f"{source} lacks {', '.join(missing)}: it was written by another version of TL Studio. "
                "Evaluate the run again to replace it."
            )
        try:
            return cls(
                split=str(raw["split"]),
                classes=tuple(str(name) for name in raw["classes"]),
                top_k=int(raw["top_k"]),
                accuracy=_float(raw["accuracy"]),
                top_k_accuracy=_float(raw["top_k_accuracy"]),
                loss=_float(raw["loss"]),
                confusion_matrix=np.asarray(raw["confusion_matrix"], dtype=np.int64),
                per_class=tuple(
                    ClassMetrics(str(c["name"]), _float(c["precision"]), _float(c["recall"]), _float(c["f1"]),
                                 int(c["support"]))
                    for c in raw["per_class"]
                ),
                records=tuple(
                    ImageRecord(str(r["path"]), int(r["true"]), int(r["predicted"]),
                                tuple(float(p) for p in r["probabilities"]), float(r["loss"]))
                    for r in raw["records"]
                ),
                skipped=tuple(SkippedFile(str(s["path"]), str(s["reason"])) for s in raw.get("skipped", ())),
                run=str(raw.get("run", "")),
                created=str(raw.get("created", "")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(
                f"{source} is malformed ({type(error).__name__}: {error}). Evaluate the run again to replace it."
            ) from None


def evaluate_probabilities(
    classes: Sequence[str],
    paths: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    split: str = "val",
    top_k: int = DEFAULT_TOP_K,
    skipped: Sequence[SkippedFile] = (),
    run: str = "",
) -> Evaluation:
    """The evaluation of predictions already made: one row of class probabilities per image.

    This is the arithmetic of :func:`evaluate_run` without the model, so the
    GUI can evaluate predictions it holds and tests can check hand-computed
    values.
    """
    _check_top_k(top_k)
    classes = tuple(classes)
    scores = np.asarray(probabilities, dtype=np.float64).reshape(len(paths), len(classes))
    true = np.asarray(labels, dtype=np.int64).ravel()
    if true.size != len(paths):
        raise ValueError(f"Need one label per image. Received: {true.size} labels for {len(paths)} images.")
    predicted = np.argmax(scores, axis=1) if len(paths) else np.zeros(0, dtype=np.int64)
    cm = metrics.confusion_matrix(true, predicted, len(classes))
    precision, recall = metrics.per_class_precision_recall(cm)
    f1 = metrics.per_class_f1(cm)
    losses = -np.log(np.clip(scores[np.arange(len(paths)), true], LOSS_EPSILON, 1.0)) if len(paths) else np.zeros(0)
    k = min(top_k, len(classes))
    return Evaluation(
        split=split,
        classes=classes,
        top_k=k,
        accuracy=metrics.accuracy(cm),
        top_k_accuracy=metrics.top_k_accuracy(scores, true, k),
        loss=float(np.mean(losses)) if losses.size else float("nan"),
        confusion_matrix=cm,
        per_class=tuple(
            ClassMetrics(name, float(precision[i]), float(recall[i]), float(f1[i]), int(cm[i].sum()))
            for i, name in enumerate(classes)
        ),
        records=tuple(
            ImageRecord(
                str(path), int(true[i]), int(predicted[i]), tuple(float(p) for p in scores[i]), float(losses[i])
            )
            for i, path in enumerate(paths)
        ),
        skipped=tuple(skipped),
        run=run,
    )


def with_top_k(evaluation: Evaluation, top_k: int) -> Evaluation:
    """The same predictions measured with another top-k (no model needed)."""
    records = evaluation.records
    return evaluate_probabilities(
        evaluation.classes,
        [r.path for r in records],
        [r.true for r in records],
        [r.probabilities for r in records],
        split=evaluation.split,
        top_k=top_k,
        skipped=evaluation.skipped,
        run=evaluation.run,
    )


def evaluate_run(
    run: Any,
    split: str = "val",
    top_k: int = DEFAULT_TOP_K,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
    model: Any = None,
    save: bool = True,
    dataset: Any = None,
) -> Evaluation:
    """Predict the run's ``split`` ("val" or "test") with its best model and measure the results.

    ``run`` is a :class:`~tlstudio.core.train.runs.Run` or its folder; ``model``, when
    given, is used instead of loading ``model.keras`` (the GUI has it in
    memory after training). ``dataset``, when given, is the
    :class:`~tlstudio.core.data.dataset.Dataset` whose split is evaluated instead
    of scanning the recipe's folders again: the one the run was trained on,
    which may have been built without folders. With ``save`` the result is written into the run
    folder's ``evaluation.json``. Raises UserError for a folder that is not a
    complete run, a split with no images, data whose classes the model does
    not know; Cancelled between batches when ``should_stop()`` turns true.
    Progress events have task "evaluate".
    """
    from tlstudio.core.train import runs
    from tlstudio.core.data.dataset import scan_data_spec

    if split not in SPLITS:
        raise UserError(f"Unknown split. Expected one of {', '.join(SPLITS)}. Received: split={split!r}")
    _check_top_k(top_k)
    if not isinstance(run, runs.Run):
        run = runs.load_run(run)
    if model is None and not run.model_path.is_file():
        raise ModelFileError(
            f"The run folder {str(run.path)!r} has no {runs.MODEL_FILE}, so there is no model to evaluate: "
            "it was written by an older version or the run stopped before saving. Train again."
        )
    if dataset is None:
        if not run.recipe.data.folders:
            raise UserError(
                f"The run {str(run.path)!r} does not name its data folders in {runs.RECIPE_FILE}, so its "
                f"{SPLIT_NAMES[split]} images cannot be found. Train again from a project with data folders."
            )
        dataset = scan_data_spec(run.recipe.data, on_event=on_event, should_stop=should_stop)
    items = dataset.val if split == "val" else dataset.test
    if not items:
        raise DataError(_empty_split_message(split, run.recipe.data.folders))
    labels = _run_labels(dataset, items, run.classes)
    if model is None:
        model = run.load_model()
    size = _model_input_size(model, run.path, len(run.classes))
    probabilities, kept, skipped = _predict(model, [item.path for item in items], size, split, on_event, should_stop)
    if not kept:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
        raise DataError(f"None of the {len(items)} {SPLIT_NAMES[split]} images can be read ({reasons}).")
    if skipped:
        named = name_some([f"{s.path} ({s.reason})" for s in skipped])
        on_event(Message(f"{read_summary(len(kept), len(skipped))}; left out: {named}.", "warning"))
    evaluation = evaluate_probabilities(
        run.classes,
        [items[i].path for i in kept],
        labels[kept],
        probabilities,
        split=split,
        top_k=top_k,
        skipped=skipped,
        run=str(run.path),
    )
    if save:
        save_evaluation(evaluation, run.path)
    return evaluation


def mistakes(
    evaluation: Evaluation, limit: int | None = None, confidence_below: float = UNCERTAIN_BELOW
) -> list[ImageRecord]:
    """The misclassified images and the correct ones predicted with less than ``confidence_below``,
    highest loss first (at most ``limit``)."""
    chosen = [r for r in evaluation.records if not r.correct or r.confidence < confidence_below]
    return _worst_first(chosen)[:limit]


def cell_records(evaluation: Evaluation, true: int, predicted: int) -> list[ImageRecord]:
    """The images of one confusion-matrix cell (true class row, predicted class column), highest loss first."""
    n = len(evaluation.classes)
    if not (0 <= true < n and 0 <= predicted < n):
        raise ValueError(f"Cell ({true}, {predicted}) is outside the {n}x{n} confusion matrix.")
    return _worst_first([r for r in evaluation.records if r.true == true and r.predicted == predicted])


def save_evaluation(evaluation: Evaluation, run_dir: str | os.PathLike[str]) -> Path:
    """Write (or replace) this split's entry in the run folder's ``evaluation.json``.

    The other split's entry is kept; a damaged or foreign file is replaced.
    """
    from tlstudio.core.train.runs import write_json

    path = Path(run_dir) / EVALUATION_FILE
    try:
        splits = {name: ev.to_dict() for name, ev in load_evaluations(run_dir).items()}
    except UserError:
        splits = {}
    splits[evaluation.split] = evaluation.to_dict()
    try:
        return write_json(path, {"tlstudio_evaluation": EVALUATION_VERSION, "splits": splits})
    except OSError as error:
        raise UserError(
            f"Cannot save the evaluation to {str(path)!r}: {error.strerror or error}. "
            "Check that the run folder is writable."
        ) from None


def load_evaluations(run_dir: str | os.PathLike[str]) -> dict[str, Evaluation]:
    """The evaluations saved in a run folder, by split; empty when it has none.

    Raises UserError when ``evaluation.json`` exists but cannot be read, or
    comes from another version of TL Studio.
    """
    import json

    path = Path(run_dir) / EVALUATION_FILE
    if not path.is_file():
        return {}
    source = f"The evaluation file {str(path)!r}"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"Cannot read {str(path)!r}: {error.strerror or error}.") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{source} is not valid JSON (line {error.lineno}: {error.msg}). Evaluate again.") from None
    version = raw.get("tlstudio_evaluation") if isinstance(raw, dict) else None
    if not isinstance(version, int) or not isinstance(raw.get("splits"), dict):
        raise UserError(f"{source} is not a TL Studio evaluation (no 'tlstudio_evaluation' version). Evaluate again.")
    if version > EVALUATION_VERSION:
        raise UserError(
            f"{source} was written by a newer TL Studio (format {version}; this version reads up to "
            f"{EVALUATION_VERSION}). Update TL Studio or evaluate again."
        )
    return {
        split: Evaluation.from_dict(entry, f"{source} ({split})")
        for split, entry in raw["splits"].items()
        if isinstance(entry, dict)
    }


def _predict(
    model: Any, paths: list[str], size: int, split: str, on_event: OnEvent, should_stop: ShouldStop
) -> tuple[np.ndarray, list[int], list[SkippedFile]]:
    """Probabilities of the readable images (in order), their indexes, and the files left out."""
    from tlstudio.core.data.images import load_rgb

    def decode(path: str) -> np.ndarray | str:
        try:
            return load_rgb(path, size)
        except ImageError as error:
            return error.reason
        except OSError as error:
            return f"cannot read: {error.strerror or error}"
        except MemoryError:
            return "too large to decode (out of memory)"

    rows: list[np.ndarray] = []
    kept: list[int] = []
    skipped: list[SkippedFile] = []
    total = len(paths)
    what = f"Predicting the {SPLIT_NAMES[split]} images"
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, total, BATCH_SIZE):
            if should_stop():
                raise Cancelled("Evaluation cancelled.")
            on_event(Progress("evaluate", start, total, what))
            batch, indexes = [], []
            chunk = paths[start : start + BATCH_SIZE]
            for offset, decoded in enumerate(pool.map(decode, chunk)):
                if isinstance(decoded, str):
                    skipped.append(SkippedFile(chunk[offset], decoded))
                else:
                    batch.append(decoded)
                    indexes.append(start + offset)
            if batch:
                images = np.stack(batch).astype(np.float32)
                rows.append(np.asarray(model(images, training=False), dtype=np.float64))
                kept.extend(indexes)
    on_event(Progress("evaluate", total, total, "Done"))
    probabilities = np.concatenate(rows) if rows else np.zeros((0, 0))
    return probabilities, kept, skipped


def _run_labels(dataset: Any, items: Sequence[Any], run_classes: tuple[str, ...]) -> np.ndarray:
    """Each item's label as an index into the run's classes (the model's outputs)."""
    position = {name: i for i, name in enumerate(run_classes)}
    used = sorted({dataset.classes[item.label] for item in items})
    unknown = [name for name in used if name not in position]
    if unknown:
        raise DataError(
            f"The data folders now hold classes the model was not trained on: {', '.join(unknown)}. "
            f"The model knows {', '.join(run_classes)}. Remove those folders or train a new run."
        )
    return np.asarray([position[dataset.classes[item.label]] for item in items], dtype=np.int64)


def _model_input_size(model: Any, run_path: Path, classes: int) -> int:
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise ModelFileError(
            f"The model of run {str(run_path)!r} must take square RGB images of a fixed size, input shape "
            f"(None, N, N, 3). Received: input shape {shape}"
        )
    if model.output_shape[-1] != classes:
        raise ModelFileError(
            f"The model of run {str(run_path)!r} has {model.output_shape[-1]} outputs but the run lists "
            f"{classes} classes; the run folder is inconsistent. Train again."
        )
    return int(shape[1])


def _empty_split_message(split: str, folders: Sequence[str]) -> str:
    where = ", ".join(repr(str(f)) for f in folders) or "given as a dataset, without folders"
    if split == "test":
        return (
            f"The run's data ({where}) has no test split. A test split comes from a test/ folder beside "
            "train/ and val/; evaluate the validation split instead (split='val', --split val)."
        )
    return (
        f"The run's data ({where}) has no validation images to evaluate on. Put images in its val/ folder, "
        "or use class folders so that a share of each class is held out for validation."
    )


def _check_top_k(top_k: int) -> None:
    if not isinstance(top_k, int) or top_k < 1:
        raise UserError(f"top-k must be a whole number of at least 1. Received: top_k={top_k!r}")


def _worst_first(records: list[ImageRecord]) -> list[ImageRecord]:
    return sorted(records, key=lambda r: (-r.loss, r.path))


def _number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)
