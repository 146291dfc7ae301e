"""The Export page: a real (tiny) training run exported, checked and shown; bad destinations explained."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QDesktopServices

from tlstudio.core.spec.recipe import BaseSpec, DataSpec, Recipe, TrainSpec
from tlstudio.core.use.export import export_run
from tlstudio.gui import errors, workers
from tlstudio.gui.pages import export_page
from tlstudio.gui.pages.export_page import ExportPage
from tlstudio.gui.state import ProjectState

# The export runs in a worker process: faults are injected there by these functions, which the
# process finds by importing this module.

def export_with_black_calibration(*args, **kwargs):
    """The real export, its int8 model calibrated on black images (so it misses its accuracy rule)."""
    from tlstudio.core.use import export_calibration
    from tlstudio.core.use.export_calibration import ImageSet

    real = export_calibration.calibration_set

    def black(*args, **kwargs) -> ImageSet:
        found = real(*args, **kwargs)
        return ImageSet(found.images * 0, found.labels, found.note, found.per_class)

    export_calibration.calibration_set = black
    return export_run(*args, **kwargs)


def export_stuck_in_a_converter(*args, on_event, should_stop, **kwargs):
    """Reports a step, then holds the interpreter lock like a converter, never checking should_stop."""
    import os
    from pathlib import Path

    from tlstudio.core.spec.events import Progress

    on_event(Progress("export", 0, 10, f"Converting (process {os.getpid()})"))
    staging = Path(args[1]).with_name(".staging-of-the-stuck-export")
    staging.mkdir()
    try:
        while True:
            sum(range(1_000_000))
    finally:
        staging.rmdir()


@pytest.fixture
def trained_state(image_root, tiny_vgg_file, tmp_path):
    """A project state holding a finished one-epoch run on generated images."""
    from tlstudio.core.train.training import train

    recipe = Recipe(
        data=DataSpec(folders=(str(image_root),)),
        base=BaseSpec(name="file", model_file=str(tiny_vgg_file), input_size=32),
        training=TrainSpec(epochs=1, batch_size=8),
    )
    state = ProjectState(recipe)
    state.set_tensorflow_ready(True)
    state.set_last_run(train(recipe, out_dir=tmp_path / "run"))
    return state


@pytest.fixture
def dialogs(monkeypatch):
    """The texts of the error dialogs shown (their exec is recorded instead of blocking)."""
    shown = []
    monkeypatch.setattr(errors.ErrorDialog, "exec", lambda self: shown.append(self.text()) or 0)
    return shown


def export(qtbot, page):
    with qtbot.waitSignal(page.export_finished, timeout=120_000) as blocker:
        qtbot.mouseClick(page.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.export_button.isEnabled(), timeout=5_000)
    return blocker.args[0]


def test_export_writes_the_files_and_shows_the_checks(qtbot, trained_state, tmp_path, dialogs, monkeypatch):
    page = ExportPage(trained_state)
    qtbot.addWidget(page)
    assert page.run_dir == trained_state.last_run.run_dir
    destination = tmp_path / "exported"
    page.destination_edit.setText(str(destination))
    for fmt, box in page.format_boxes.items():
        box.setChecked(fmt in ("keras", "tflite"))
    report = export(qtbot, page)
    assert dialogs == []
    assert report is not None and report.passed
    assert (destination / "model.keras").is_file()
    assert (destination / "model.tflite").is_file()
    assert (destination / "labels.txt").read_text().split() == ["circles", "squares", "stripes"]
    assert (destination / "model_card.json").is_file()
    assert page.checks_table.rowCount() == 2
    assert "passed" in page.checks_table.item(0, 5).text()
    assert page.costs_table.rowCount() == 2
    assert "measured on" in page.costs_label.text() and "cores" in page.costs_label.text()
    assert page.costs_table.item(0, 2).text().endswith(" ms")
    assert page.costs_table.item(1, 4).text().endswith(" MiB")
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    assert page.open_button.isEnabled()
    qtbot.mouseClick(page.open_button, Qt.MouseButton.LeftButton)
    assert opened == [str(destination)]

    # The same folder again without "replace": the engine's message, nothing lost.
    page.measure_box.setChecked(False)
    assert export(qtbot, page) is None
    assert len(dialogs) == 1 and dialogs[0] == "The folder 'exported' already exists."
    assert "overwrite" not in dialogs[0]
    assert (destination / "model.keras").is_file()

    # A destination that cannot be created: a clear message, and the page still works.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    page.destination_edit.setText(str(blocker / "exported"))
    assert export(qtbot, page) is None
    assert len(dialogs) == 2 and "Cannot write the export" in dialogs[1]
    assert page.export_button.isEnabled()


def test_export_waits_for_a_run_and_for_tensorflow(qtbot):
    state = ProjectState()
    page = ExportPage(state)
    qtbot.addWidget(page)
    assert not page.export_button.isEnabled()
    assert "train a model first" in page.export_button.toolTip()
    assert "wait for TensorFlow" in page.export_button.toolTip()


def test_a_not_recommended_int8_model_is_marked(qtbot, trained_state, tmp_path, dialogs, monkeypatch):
    monkeypatch.setattr(export_page, "export_run", export_with_black_calibration)
    page = ExportPage(trained_state)
    qtbot.addWidget(page)
    page.destination_edit.setText(str(tmp_path / "int8"))
    page.measure_box.setChecked(False)
    for fmt, box in page.format_boxes.items():
        box.setChecked(fmt in ("tflite", "tflite-int8"))
    report = export(qtbot, page)
    assert dialogs == [] and report is not None and not report.passed and report.failed == ()
    texts = [page.checks_table.item(row, 5).text() for row in range(page.checks_table.rowCount())]
    assert "passed" in texts[0] and "NOT RECOMMENDED" in texts[1]
    assert "tflite-int8 (not recommended)" in page.result_label.text()
    assert page.costs_table.rowCount() == 0 and page.costs_label.text() == "Costs not measured."


def export_killed(*args, on_event, should_stop, **kwargs):
    """The export process dies as if the system ran out of memory."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def test_an_export_process_that_dies_is_reported_and_the_page_still_works(qtbot, trained_state, tmp_path,
                                                                          dialogs, monkeypatch):
    monkeypatch.setattr(export_page, "export_run", export_killed)
    page = ExportPage(trained_state)
    qtbot.addWidget(page)
    page.destination_edit.setText(str(tmp_path / "killed"))
    assert export(qtbot, page) is None
    assert len(dialogs) == 1 and "export process ended unexpectedly (killed by signal 9)" in dialogs[0]
    assert not (tmp_path / "killed").exists()
    assert page.export_button.isEnabled() and not page.cancel_button.isVisible()


def test_the_export_runs_in_another_process_and_stop_ends_it_cleanly(qtbot, trained_state, tmp_path, dialogs,
                                                                     monkeypatch):
    """A converter that never checks for Stop: the window keeps answering, and Stop still ends it."""
    import os

    monkeypatch.setattr(export_page, "export_run", export_stuck_in_a_converter)
    monkeypatch.setattr(export_page, "run_in_process", _quick_to_end(export_page.run_in_process))
    page = ExportPage(trained_state)
    qtbot.addWidget(page)
    destination = tmp_path / "stuck"
    page.destination_edit.setText(str(destination))
    stopped = []
    page.export_finished.connect(stopped.append)
    qtbot.mouseClick(page.export_button, Qt.MouseButton.LeftButton)
    assert workers.running(workers.JobKind.EXPORT)
    qtbot.waitUntil(lambda: "Converting (process" in page.progress_label.text(), timeout=60_000)
    assert f"(process {os.getpid()})" not in page.progress_label.text()

    # The GUI thread keeps running its timers while the process spins.
    ticks = []
    timer = qtbot_timer(page, ticks)
    qtbot.waitUntil(lambda: len(ticks) >= 10, timeout=5_000)
    timer.stop()

    qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
    assert page.progress_label.text() == "Stopping…"
    qtbot.waitUntil(lambda: page.export_button.isEnabled(), timeout=60_000)
    assert stopped == [None] and dialogs == []
    assert not workers.running(workers.JobKind.EXPORT)
    assert not destination.exists() and not (tmp_path / ".staging-of-the-stuck-export").exists()
    assert not page.cancel_button.isVisible() and page.progress_label.text() == ""


def _quick_to_end(run_in_process):
    """``run_in_process`` with a short grace before a process that ignores Stop is ended."""
    def start(*args, **kwargs):
        handle = run_in_process(*args, **kwargs)
        handle.call.stop_grace_s = 0.5
        return handle
    return start


def qtbot_timer(parent, ticks):
    from PySide6.QtCore import QTimer

    timer = QTimer(parent)
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start()
    return timer
