"""A saved run as the result its training returned, so a run opened later is used like a fresh one."""

from __future__ import annotations

from tlstudio.core.train.runs import Run
from tlstudio.core.train.training import RunResult


def run_result(run: Run) -> RunResult:
    """The :class:`RunResult` the training of ``run`` returned: its folder, classes, history and metrics."""
    metrics = dict(run.metrics)
    return RunResult(
        run_dir=run.path,
        classes=run.classes,
        history={key: list(values) for key, values in run.history.items()},
        metrics=metrics,
        best_epoch=int(metrics.get("best_epoch", 0) or 0),
    )
