"""Export a run's classifier for use outside TL Studio, and prove the copies can be trusted.

One export is a folder holding the chosen artifacts (formats and files in
:mod:`tlstudio.core.use.export_formats`), ``labels.txt`` (one class name per
line, in output order), ``model_card.json`` (what the model is, every rule for
feeding it, how each artifact did and what it costs:
:mod:`tlstudio.core.use.export_card`) and example scripts
(``predict_onnx.py``, ``predict_tflite.py``: :mod:`tlstudio.core.use.export_scripts`).

After writing, every artifact and the in-app model run on the run's
validation images (up to a cap) and are compared
(:mod:`tlstudio.core.use.export_verify`): float artifacts must agree within
1e-4; quantised ones (fp16, int8) on top-1 agreement and accuracy. The int8
model is calibrated on stratified training images
(:mod:`tlstudio.core.use.export_calibration`); when it misses its rule the
layers that quantise badly are named (:mod:`tlstudio.core.use.export_debug`)
and it is kept, marked "not recommended". Each artifact's size, latency and
peak memory are then measured in its own runtime
(:mod:`tlstudio.core.use.export_costs`).

The export is built in a hidden temporary folder beside the destination and
renamed into place at the end, so a destination is either complete or absent;
an existing destination is only replaced with ``overwrite=True``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from tlstudio.core.spec.errors import Cancelled, DataError, ExportError
from tlstudio.core.spec.events import (
    Message,
    OnEvent,
    Progress,
    ShouldStop,
    ignore_event,
    never_stop,
)
from tlstudio.core.train.runs import Run, load_run
from tlstudio.core.use import export_calibration, export_costs, export_debug
from tlstudio.core.use.destination import check_destination
from tlstudio.core.use.export_calibration import (
    CALIBRATION_IMAGES,
    CHECK_IMAGE_CAP,
    ImageSet,
)
from tlstudio.core.use.export_card import (
    LABELS_FILE,
    MODEL_CARD_FILE,
    MODEL_CARD_VERSION,
    model_card,
)
from tlstudio.core.use.export_costs import ArtifactCost
from tlstudio.core.use.export_formats import (
    ARTIFACT_NAMES,
    DEFAULT_FORMATS,
    FORMATS,
    QUANTISED_FORMATS,
    work_saved_model,
    write_artifacts,
)
from tlstudio.core.use.export_runtime import tflite_interpreter
from tlstudio.core.use.export_scripts import write_example_scripts
from tlstudio.core.use.export_verify import (
    ACCURACY_TOLERANCE,
    FLOAT_TOLERANCE,
    MIN_AGREEMENT,
    ArtifactCheck,
    check_artifacts,
)

__all__ = [
    "ACCURACY_TOLERANCE", "CALIBRATION_IMAGES", "CHECK_IMAGE_CAP", "FLOAT_TOLERANCE", "MIN_AGREEMENT",
    "ARTIFACT_NAMES", "DEFAULT_FORMATS", "FORMATS", "LABELS_FILE", "MODEL_CARD_FILE", "MODEL_CARD_VERSION",
    "QUANTISED_FORMATS", "ArtifactCheck", "ArtifactCost", "ExportReport", "export_run", "model_card",
    "tflite_interpreter",
]


@dataclass(frozen=True)
class ExportReport:
    """Where an export went, what it holds (format → artifact path), how its checks went and what each costs.

    ``machine`` names the computer the costs were measured on; ``calibration``
    describes the int8 calibration set ({} without int8).
    """

    destination: Path
    artifacts: dict[str, Path]
    checks: tuple[ArtifactCheck, ...]
    costs: tuple[ArtifactCost, ...] = ()
    machine: str = ""
    calibration: dict = field(default_factory=dict)
    scripts: tuple[Path, ...] = ()

    @property
    def passed(self) -> bool:
        """Whether every artifact passed its check (quantised ones included)."""
        return all(check.passed for check in self.checks)

    @property
    def failed(self) -> tuple[ArtifactCheck, ...]:
        """Checks that failed outright: a float artifact off by more than 1e-4, or one that could not run.
        A quantised artifact that misses its accuracy rule is "not recommended", not failed."""
        return tuple(check for check in self.checks if check.status == "failed")


def export_run(
    run: Run | str | os.PathLike[str],
    destination: str | os.PathLike[str],
    formats: Sequence[str] = DEFAULT_FORMATS,
    overwrite: bool = False,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
    measure_costs: bool = True,
    cost_runs: int = export_costs.TIMED_RUNS,
) -> ExportReport:
    """Write the run's classifier to ``destination`` in ``formats``, check every artifact, measure, report.

    ``run`` is a :class:`~tlstudio.core.train.runs.Run` or its folder. ``tflite-int8``
    needs the run's training images (named in its recipe) for calibration.
    ``measure_costs`` runs each artifact in a fresh process to time it
    (``cost_runs`` timed calls) and find its peak memory. Raises ExportError
    for unknown formats, an existing destination without ``overwrite``, an
    unwritable destination or a failed conversion; Cancelled when
    ``should_stop()`` turns true. Failed checks do not raise: they are in the
    report (``report.passed``, ``report.failed``).
    """
    chosen = _validate_formats(formats)
    if not isinstance(run, Run):
        run = load_run(run)
    target = Path(destination).expanduser().absolute()
    _refuse_existing(target, overwrite, (run.path,))

    model = run.load_model()
    input_size = _input_size(model)
    if model.output_shape[-1] != len(run.classes):
        raise ExportError(
            f"The run's model has {model.output_shape[-1]} outputs but the run lists {len(run.classes)} classes "
            f"({', '.join(run.classes)}); its folder {str(run.path)!r} is inconsistent. Train again."
        )
    dataset, missing = _scan(run, should_stop)
    check = _check_set(run, dataset, missing, input_size, on_event)
    calibration = _calibration(run, dataset, missing, input_size) if "tflite-int8" in chosen else None

    steps = (3 if measure_costs else 2) * len(chosen) + 4 + ("tflite-int8" in chosen)
    progress = _Progress(on_event, should_stop, steps)
    staging = _make_staging(target)
    try:
        images = calibration.images if calibration is not None else None
        artifacts = write_artifacts(model, staging, chosen, input_size, images, progress.step)
        progress.step("Writing labels.txt and the example scripts")
        _write_text(staging / LABELS_FILE, "".join(f"{name}\n" for name in run.classes))
        scripts = write_example_scripts(staging, artifacts)
        checks = check_artifacts(model, artifacts, check, progress.step)
        checks = _diagnose(model, staging, input_size, checks, calibration, progress)
        costs, machine = [], ""
        if measure_costs:
            machine = export_costs.machine_description()
            for fmt, path in artifacts.items():
                progress.step(f"Measuring {path.name}: size, latency, peak memory")
                costs.append(export_costs.measure_one(fmt, path, input_size, cost_runs))
        progress.step("Writing model_card.json")
        card = model_card(run, model, artifacts, checks, costs, machine, calibration, [p.name for p in scripts])
        _write_text(staging / MODEL_CARD_FILE, json.dumps(card, indent=2) + "\n")
        progress.step("Moving the export into place")
        _refuse_existing(target, overwrite, (run.path,))
        _publish(staging, target, overwrite)
    except OSError as error:
        raise _write_error(target, error) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    on_event(Progress("export", steps, steps, f"Exported to {target}"))
    for item in checks:
        if not item.passed:
            on_event(Message(f"{item.format} {item.status}: {item.message}", "warning"))
    return ExportReport(
        destination=target,
        artifacts={fmt: target / path.name for fmt, path in artifacts.items()},
        checks=tuple(replace(c, path=target / c.path.name) for c in checks),
        costs=tuple(costs),
        machine=machine,
        calibration=card.get("calibration", {}),
        scripts=tuple(target / p.name for p in scripts),
    )


class _Progress:
    """Counts export steps, reports them and stops between them when asked."""

    def __init__(self, on_event: OnEvent, should_stop: ShouldStop, total: int) -> None:
        self._on_event = on_event
        self._should_stop = should_stop
        self._total = total
        self._done = 0

    def step(self, message: str) -> None:
        if self._should_stop():
            raise Cancelled("Export cancelled.")
        self._on_event(Progress("export", self._done, self._total, message))
        self._done += 1


def _validate_formats(formats: Sequence[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [part.strip() for part in formats.split(",") if part.strip()]
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise ExportError(
            f"Unknown export format. Expected one or more of {', '.join(FORMATS)}. "
            f"Received: formats={list(formats)!r}"
        )
    return tuple(fmt for fmt in FORMATS if fmt in formats)


def _refuse_existing(target: Path, overwrite: bool, protected: Sequence[Path] = ()) -> None:
    """Refuse a destination that is not absent, empty or an earlier export (see :mod:`destination`)."""
    check_destination(target, overwrite, protected)


def _input_size(model) -> int:
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise ExportError(
            "Only models taking square RGB images of a fixed size can be exported "
            f"(input shape (None, N, N, 3)). Received: input shape {shape}"
        )
    return int(shape[1])


def _make_staging(target: Path) -> Path:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.export-", dir=target.parent))
    except OSError as error:
        raise _write_error(target, error) from None


def _publish(staging: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished export into place; an old one is swapped out only then."""
    if not (overwrite and target.exists()):
        try:
            os.rename(staging, target)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                _refuse_existing(target, overwrite=False)
            raise
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_error(target: Path, error: OSError) -> ExportError:
    hints = {
        errno.ENOSPC: "the disk is full; free some space or choose another disk",
        errno.EDQUOT: "the disk quota is exceeded; free some space or choose another disk",
        errno.EACCES: "permission denied; choose a folder you can write to",
        errno.EPERM: "permission denied; choose a folder you can write to",
        errno.EROFS: "the disk is read-only; choose a folder you can write to",
    }
    reason = error.strerror or str(error)
    hint = hints.get(error.errno, "choose a folder you can write to, on a disk with free space")
    return ExportError(f"Cannot write the export to {str(target)!r}: {reason} ({hint}).")


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")



def _scan(run: Run, should_stop: ShouldStop):
    """The run's dataset, split as in training (same folders, fraction and seed), or why not.

    Returns ``(dataset, "")`` or ``(None, reason)``: missing images only
    matter to the steps that need them.
    """
    from tlstudio.core.data.dataset import scan_data_spec

    if not run.recipe.data.folders:
        return None, "the run's recipe names no data folders."
    try:
        return scan_data_spec(run.recipe.data, should_stop=should_stop), ""
    except DataError as error:
        return None, str(error)


def _check_set(run: Run, dataset, missing: str, input_size: int, on_event: OnEvent) -> ImageSet:
    """The run's validation images to judge on, or generated ones (said so) when they are gone."""
    if dataset is not None:
        found = export_calibration.check_set(dataset, run.classes, input_size)
        if len(found.images):
            return found
        missing = "none of them can be read."
    generated = export_calibration.generated_set(input_size)
    note = f"{generated.note} (the run's images are not available: {missing})"
    on_event(Message(f"The round-trip check uses {note}", "warning"))
    return replace(generated, note=note)


def _calibration(run: Run, dataset, missing: str, input_size: int) -> ImageSet:
    """Calibration images for int8 quantisation; ExportError when the training images are gone."""
    found = export_calibration.calibration_set(dataset, run.classes, input_size) if dataset is not None else None
    if found is None or not len(found.images):
        raise ExportError(
            "The int8 TFLite model needs the run's training images to calibrate its value ranges, "
            f"and they cannot be read: {missing or 'none of them can be read.'} Make the data folders "
            f"available again ({', '.join(run.recipe.data.folders) or 'none recorded'}), "
            "or export without tflite-int8."
        )
    return found


def _diagnose(
    model, staging: Path, input_size: int, checks: list[ArtifactCheck], calibration: ImageSet | None,
    progress: _Progress,
) -> list[ArtifactCheck]:
    """Name the layers that quantise badly when the int8 model misses its rule."""
    result = []
    for check in checks:
        if check.format == "tflite-int8" and check.status == "not recommended" and calibration is not None:
            progress.step("Looking for the layers that quantise badly")
            saved_model = work_saved_model(model, staging, input_size)
            layers = export_debug.badly_quantised_layers(saved_model, calibration.images)
            shutil.rmtree(staging / ".work", ignore_errors=True)
            hint = ("; layers that quantise badly: " + "; ".join(layers)) if layers else ""
            check = replace(check, bad_layers=layers,
                            message=check.message + hint + "; try tflite-fp16 or the float tflite model")
        result.append(check)
    return result
