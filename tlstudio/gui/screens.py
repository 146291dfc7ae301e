"""Screenshots of every page on a small generated project: ``python -m tlstudio.gui.screens OUT_DIR``.

It writes photo-like generated landscapes (:mod:`tlstudio.core.data.scenes`,
four classes, with an unreadable file and a duplicate) to a temporary folder,
opens the main window at its default size (1280×820) as a new user would, on
EfficientNet-Lite0 (its weights ship with the app), drops the folders on the
Data page, lets the Model page load the base model, trains briefly through the
Train page's Start, waits for the Evaluate page, exports through the Export
page, predicts a few images on the Predict page and lists the run on the Runs
page, saving a PNG of the window on each page into ``OUT_DIR``:
``1-data.png`` … ``7-runs.png``. Without a display it runs offscreen. Runs and
exports go to the temporary folder, which is removed at the end.

``--quick`` walks the same pages on fewer images, with two epochs, short pauses
and no cost measurement on export: a check that every page renders, not
pictures for the README.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

WINDOW_SIZE = (1280, 820)
INPUT_SIZE = 128
"""Lite0's input here: small enough to train in seconds on a CPU."""


@dataclass(frozen=True)
class Pace:
    """How much work and waiting the walk-through does: images per class, epochs, pause scale."""

    per_class: int = 30
    epochs: int = 6
    pause_scale: float = 1.0
    measure_costs: bool = True


QUICK = Pace(per_class=10, epochs=2, pause_scale=0.2, measure_costs=False)


def _wait(app, condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Run the event loop until ``condition()`` holds; RuntimeError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"Timed out after {timeout:.0f} s waiting for {what}.")
        app.processEvents()
        time.sleep(0.01)


def _settle(app, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def take_screens(out_dir: str | Path, pace: Pace = Pace()) -> list[Path]:
    """Build the sample project, walk through every page and save the PNGs; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tlstudio-screens-"))
    os.environ["TLSTUDIO_HOME"] = str(work / "home")

    from PySide6.QtCore import QSettings

    from tlstudio.gui.app import create_application

    app = create_application()
    from tlstudio.core.data.scenes import make_scene_folders
    from tlstudio.core.spec.recipe import BaseSpec, HeadSpec, Recipe, TrainSpec
    from tlstudio.gui import errors
    from tlstudio.gui.main_window import MainWindow
    from tlstudio.gui.workers import stop_all

    images = make_scene_folders(work / "landscapes", per_class=pace.per_class, size=160)
    (images / "beach" / "notes.txt").write_text("not an image")
    (images / "forest" / "empty.jpg").write_bytes(b"")
    (images / "snow" / "copy.jpg").write_bytes((images / "snow" / "snow_000.jpg").read_bytes())

    window = MainWindow(settings=QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat))
    errors.install(window)
    window.resize(*WINDOW_SIZE)
    window.show()
    state = window.state
    state.set_recipe(Recipe(
        base=BaseSpec(name="efficientnet-lite0", input_size=INPUT_SIZE),
        head=HeadSpec(hidden_units=(64,), dropout=0.2),
        training=TrainSpec(epochs=pace.epochs, batch_size=16, learning_rate=3e-3, early_stopping_patience=0),
    ))
    state.save(work / "landscapes.json")

    import keras  # noqa: F401  the app imports it in the background; here the pages simply wait for it

    state.set_tensorflow_ready(True)
    data_page = window.pages["Data"]
    data_page.set_folders([str(images)])
    _wait(app, lambda: state.dataset is not None, 60, "the Data page's scan")
    _wait(app, lambda: not data_page.is_scanning(), 60, "the scan to end")
    saved = []
    window.show_page("Data")
    _settle(app, 1.5 * pace.pause_scale)
    saved.append(_grab(window, out, 1, "Data"))

    window.show_page("Model")
    if state.base_model is None and window.pages["Model"].base_panel.build_job is None:
        window.pages["Model"].load_base_model()
    _wait(app, lambda: state.base_model is not None, 120, "the Model page to build the base model")
    _settle(app, 3.0 * pace.pause_scale)
    saved.append(_grab(window, out, 2, "Model"))

    evaluate_page = window.pages["Evaluate"]
    evaluated = []
    evaluate_page.evaluated.connect(evaluated.append)
    train_page = window.pages["Train"]
    window.show_page("Train")
    train_page.start()
    _wait(app, lambda: state.last_run is not None and not train_page.is_running(), 600, "training")
    _settle(app, 1.0 * pace.pause_scale)
    saved.append(_grab(window, out, 3, "Train"))

    evaluate_page = window.pages["Evaluate"]
    window.show_page("Evaluate")
    _wait(app, lambda: evaluate_page.evaluation is not None and evaluate_page.job is None, 180, "evaluation")
    _settle(app, 1.0 * pace.pause_scale)
    saved.append(_grab(window, out, 4, "Evaluate"))

    export_page = window.pages["Export"]
    window.show_page("Export")
    export_page.destination_edit.setText(str(work / "exports" / "landscapes-classifier"))
    export_page.measure_box.setChecked(pace.measure_costs)
    finished = []
    export_page.export_finished.connect(finished.append)
    export_page.start_export()
    _wait(app, lambda: bool(finished) and export_page.export_button.isEnabled(), 600, "the export")
    _settle(app, 1.0 * pace.pause_scale)
    saved.append(_grab(window, out, 5, "Export"))

    predict_page = window.pages["Predict"]
    window.show_page("Predict")
    predicted = []
    predict_page.predicted.connect(predicted.append)
    predict_page.add_paths([str(images / name / f"{name}_{n:03d}.jpg") for n in (1, 2)
                            for name in ("beach", "forest", "snow", "sunset")] + [str(images / "forest" / "empty.jpg")])
    _wait(app, lambda: bool(predicted), 180, "the predictions")
    _settle(app, 1.5 * pace.pause_scale)
    saved.append(_grab(window, out, 6, "Predict"))

    runs_page = window.pages["Runs"]
    window.show_page("Runs")
    runs_page.refresh()
    _settle(app, 2.0 * pace.pause_scale)
    saved.append(_grab(window, out, 7, "Runs"))

    state.save()
    window.close()
    window.settings.sync()
    errors.uninstall()
    stop_all()
    shutil.rmtree(work, ignore_errors=True)
    return saved


def _grab(window, out: Path, number: int, title: str) -> Path:
    path = out / f"{number}-{title.lower()}.png"
    if not window.grab().save(str(path)):
        raise RuntimeError(f"Could not write {path}")
    print(f"saved {path}", flush=True)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    quick = "--quick" in args
    args = [arg for arg in args if arg != "--quick"]
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m tlstudio.gui.screens [--quick] OUT_DIR", file=sys.stderr)
        return 2
    from tlstudio.system_libs import display_problem

    if display_problem() is not None:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    take_screens(args[0], QUICK if quick else Pace())
    return 0


if __name__ == "__main__":
    sys.exit(main())
