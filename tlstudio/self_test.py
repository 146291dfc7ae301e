"""``tlstudio --self-test``: prove an installation or a bundle works, without a screen.

It runs the whole path a user takes, at toy size, in a temporary folder:
import the GUI toolkit offscreen (PySide6 and pyqtgraph, so a bundle that lost
a Qt plugin fails here rather than on a user's desktop), generate a small
image folder, build a tiny VGG-shaped base, train one epoch, export the run to
``.keras``, TFLite and ONNX, and check that every artifact agrees with the
model. Success is one line, ``TL Studio self-test OK (...)``, and exit status
0; a failure names the step that broke and exits with 1. The build script
and CI run it on the frozen bundle; users can run it to check an install.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TextIO

from tlstudio.core.spec.text import tlstudio_version

EXPORT_FORMATS = ("keras", "tflite", "onnx")
"""Formats exported by the self-test: the native one, and the two that pull in separate converters."""

EXIT_OK = 0
EXIT_FAILED = 1


class SelfTestFailure(Exception):
    """A step ran but its result was wrong (as opposed to raising on its own)."""


@dataclass
class _Context:
    """What the steps hand each other, and the versions they found."""

    workdir: Path
    versions: dict[str, str] = field(default_factory=dict)
    image_root: Path | None = None
    run_dir: Path | None = None


def check_qt(context: _Context) -> None:
    """Import PySide6 and pyqtgraph and draw one plot widget on Qt's offscreen platform."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    import PySide6
    import pyqtgraph
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    plot = pyqtgraph.PlotWidget()
    plot.plot([0.0, 1.0, 0.5])
    plot.grab()
    plot.deleteLater()
    app.processEvents()
    context.versions["PySide6"] = PySide6.__version__
    context.versions["pyqtgraph"] = pyqtgraph.__version__


def check_engine_imports(context: _Context) -> None:
    """Import TensorFlow and Keras."""
    import keras
    import tensorflow as tf

    context.versions["TensorFlow"] = tf.__version__
    context.versions["Keras"] = keras.__version__


def make_data(context: _Context) -> None:
    """Write three classes of generated images."""
    from tlstudio.core.data.samples import make_sample_folders

    context.image_root = make_sample_folders(context.workdir / "images", per_class=8, size=32)


def train_one_epoch(context: _Context) -> None:
    """Train a head on a tiny VGG-shaped base for one epoch."""
    from tlstudio.core.spec.recipe import BaseSpec, DataSpec, Recipe, TrainSpec
    from tlstudio.core.data.samples import make_tiny_vgg
    from tlstudio.core.train.training import train

    recipe = Recipe(
        data=DataSpec(folders=(str(context.image_root),)),
        base=BaseSpec(name="vgg16", weights="none", input_size=32),
        training=TrainSpec(epochs=1, batch_size=8, early_stopping_patience=0),
    )
    result = train(recipe, base_model=make_tiny_vgg(input_size=32), out_dir=context.workdir / "run")
    if result.cancelled or not (result.run_dir / "model.keras").is_file():
        raise SelfTestFailure(f"training finished without a saved model in {result.run_dir}")
    context.run_dir = result.run_dir


def export_artifacts(context: _Context) -> None:
    """Export the run in :data:`EXPORT_FORMATS` and require every round-trip check to pass."""
    from tlstudio.core.use.export import export_run

    report = export_run(context.run_dir, context.workdir / "export", formats=EXPORT_FORMATS)
    failed = [f"{check.format}: {check.message}" for check in report.checks if not check.passed]
    missing = [name for name in EXPORT_FORMATS if name not in report.artifacts]
    if failed or missing:
        raise SelfTestFailure("; ".join(failed + [f"{name}: not written" for name in missing]))


def check_data_health(context: _Context) -> None:
    """Find an injected wrong label on separable features (cleanlab and scikit-learn are bundled and work)."""
    import numpy as np

    from tlstudio.core.use.health import find_issues

    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (20, 8)) + 6 * np.eye(8)[c] for c in range(2)])
    labels = np.repeat([0, 1], 20)
    labels[3] = 1
    report = find_issues(features, labels, ("a", "b"), [str(i) for i in range(40)], ["train"] * 40)
    if not report.mislabeled or report.mislabeled[0].path != "3":
        raise SelfTestFailure(f"the health check missed an injected wrong label: {report.mislabeled[:3]}")


STEPS: tuple[tuple[str, Callable[[_Context], None]], ...] = (
    ("Qt offscreen (PySide6, pyqtgraph)", check_qt),
    ("importing TensorFlow and Keras", check_engine_imports),
    ("generating sample images", make_data),
    ("training one epoch", train_one_epoch),
    ("exporting " + ", ".join(EXPORT_FORMATS), export_artifacts),
    ("data health check (cleanlab, scikit-learn)", check_data_health),
)


def run_self_test(out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run every step in a temporary folder; print one result line to ``out``; return the exit status.

    On failure the traceback goes to ``err`` and the last line names the step.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tlstudio-self-test-") as folder:
        context = _Context(workdir=Path(folder))
        for name, step in STEPS:
            try:
                step(context)
            except Exception as error:
                traceback.print_exc(file=err)
                out.write(f"TL Studio self-test FAILED while {name}: {type(error).__name__}: {error}\n")
                out.flush()
                return EXIT_FAILED
    seconds = time.perf_counter() - started
    out.write(f"TL Studio self-test OK ({_summary(context.versions)}; {seconds:.1f} s)\n")
    out.flush()
    return EXIT_OK


def _summary(versions: dict[str, str]) -> str:
    """``tlstudio 0.1.0 (bundle), Python 3.11.7, TensorFlow 2.21.0, ...``."""
    kind = "bundle" if getattr(sys, "frozen", False) else "source"
    parts = [f"tlstudio {tlstudio_version()} ({kind})", f"Python {platform.python_version()}"]
    parts += [f"{name} {version}" for name, version in versions.items()]
    return ", ".join(parts)



def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``tlstudio --self-test``; takes no options."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args:
        sys.stderr.write(f"tlstudio: error: --self-test takes no other arguments. Received: {' '.join(args)}\n")
        return 2
    return run_self_test()
