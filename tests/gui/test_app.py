"""Start-up, the main window's projects, pages and closing, and the single error path."""

from __future__ import annotations

import sys
import threading

import pytest
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from tlstudio import system_libs
from tlstudio.core.spec.errors import Cancelled, DataError
from tlstudio.core.spec.recipe import DataSpec, HeadSpec
from tlstudio.gui import app as gui_app
from tlstudio.gui import errors, workers
from tlstudio.gui.main_window import PAGES, MainWindow


@pytest.fixture
def settings(tmp_path):
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def window(qtbot, settings):
    win = MainWindow(settings=settings)
    qtbot.addWidget(win)
    win.show()
    return win


@pytest.fixture(autouse=True)
def no_blocking_questions(monkeypatch):
    """A question left unanswered by a test would block: by default, changes are discarded."""
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kw: QMessageBox.StandardButton.Discard)


@pytest.fixture
def dialogs(monkeypatch):
    """Texts of the error dialogs shown; their exec is recorded instead of blocking."""
    shown = []
    monkeypatch.setattr(errors.ErrorDialog, "exec", lambda self: shown.append(self) or 0)
    return shown


def answer(monkeypatch, button):
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kw: asked.append(args[2]) or button)
    return asked


def test_title_follows_project_name_and_changes(window, tmp_path, monkeypatch):
    assert window.windowTitle() == "TL Studio[*]"
    assert not window.isWindowModified()
    window.state.update("head", batch_norm=False)
    assert window.isWindowModified()
    path = tmp_path / "flowers.json"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))
    window.save_action.trigger()
    assert window.windowTitle() == "flowers[*] — TL Studio"
    assert not window.isWindowModified()


def test_a_project_saves_and_reopens_identically(qtbot, window, tmp_path, monkeypatch, settings, image_root):
    state = window.state
    state.update(data=DataSpec(folders=(str(image_root),), val_fraction=0.3, seed=7, excluded_classes=("stripes",)))
    state.update(cut_tensor="block3_pool:0", head=HeadSpec(hidden_units=(32,), dropout=0.25, batch_norm=False))
    state.update("training", epochs=3, learning_rate=0.005)
    saved = state.recipe
    path = tmp_path / "project"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))
    window.save_as_action.trigger()
    assert (tmp_path / "project.json").is_file()
    assert not state.dirty

    window.new_action.trigger()
    assert state.recipe != saved and state.path is None
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(tmp_path / "project.json"), ""))
    window.open_action.trigger()
    assert state.recipe == saved
    assert not state.dirty
    assert window.recent_projects()[0] == str((tmp_path / "project.json").resolve())
    assert window.recent_menu.actions()[0].text() == "&1 project.json"


def test_unsaved_changes_are_offered_for_saving_on_close(qtbot, window, monkeypatch):
    window.state.update("training", epochs=4)
    asked = answer(monkeypatch, QMessageBox.StandardButton.Cancel)
    assert not window.close()
    assert window.isVisible() and asked == ["The project has unsaved changes. Save them first?"]
    answer(monkeypatch, QMessageBox.StandardButton.Discard)
    assert window.close()


def test_closing_during_training_asks_and_stops_the_worker(qtbot, window, monkeypatch):
    started = threading.Event()

    def train(on_event, should_stop):
        started.set()
        while not should_stop():
            threading.Event().wait(0.01)
        raise Cancelled("stopped")

    handle = workers.run_in_thread(train, name="retraining", kind=workers.JobKind.TRAINING)
    assert started.wait(5)
    asked = answer(monkeypatch, QMessageBox.StandardButton.No)
    assert not window.close()
    assert window.isVisible() and "Training is still running" in asked[0]
    assert handle.is_running()
    answer(monkeypatch, QMessageBox.StandardButton.Yes)
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=10_000)
    assert handle.is_finished()


def test_work_is_recognised_by_its_kind_not_its_name(qtbot, window, monkeypatch):
    release = threading.Event()

    def summary(on_event, should_stop):
        while not should_stop() and not release.is_set():
            threading.Event().wait(0.01)

    handle = workers.run_in_thread(summary, name="training summary", kind=workers.JobKind.SUMMARY)
    asked = answer(monkeypatch, QMessageBox.StandardButton.No)
    assert not workers.running(workers.JobKind.TRAINING)
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=10_000)
    assert asked == [] and handle.is_finished()


def test_pages_switch_with_ctrl_number(qtbot, window):
    shortcuts = [a.shortcut().toString() for a in window.page_actions]
    assert shortcuts == [f"Ctrl+{n}" for n in range(1, len(PAGES) + 1)]
    assert [title for title, *_ in PAGES][:5] == ["Data", "Model", "Train", "Evaluate", "Export"]
    window.page_actions[2].trigger()
    assert window.current_page_title() == "Train"
    window.page_actions[4].trigger()
    assert window.current_page_title() == "Export"
    window.show_page("Data")
    assert window.sidebar.currentRow() == 0


def test_geometry_is_remembered(qtbot, settings, monkeypatch):
    first = MainWindow(settings=settings)
    qtbot.addWidget(first)
    first.show()
    first.resize(900, 650)
    assert first.close()
    second = MainWindow(settings=settings)
    qtbot.addWidget(second)
    assert (second.width(), second.height()) == (900, 650)


def test_actions_needing_tensorflow_wait_for_it(window):
    assert window.status_text().startswith("Loading TensorFlow")
    assert window.busy_bar.isVisibleTo(window)
    model = window.pages["Model"]
    assert not model.isEnabled()
    assert window.pages["Data"].isEnabled()
    window.state.set_tensorflow_ready(True)
    assert model.isEnabled()
    assert window.status_text() == "Ready"
    window.state.busy.emit("Scanning images…")
    assert window.status_text() == "Scanning images…"


def test_a_user_mistake_shows_the_dialog_and_the_app_keeps_running(qtbot, window, tmp_path, monkeypatch, dialogs):
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(broken), ""))
    window.open_action.trigger()
    assert len(dialogs) == 1
    assert "is not valid JSON" in dialogs[0].text()
    assert dialogs[0].detailedText() == ""
    assert window.isVisible()
    window.page_actions[1].trigger()
    assert window.current_page_title() == "Model"


def test_uncaught_errors_of_any_thread_reach_the_one_dialog(qtbot, window, dialogs):
    errors.install(window)
    try:
        try:
            raise ValueError("a bug")
        except ValueError as error:
            sys.excepthook(type(error), error, error.__traceback__)
        qtbot.waitUntil(lambda: len(dialogs) == 1, timeout=5_000)
        assert "ValueError: a bug" in dialogs[0].text()
        assert "Traceback" in dialogs[0].detailedText()

        def fails():
            raise DataError("The folder has no images.")

        thread = threading.Thread(target=fails)
        thread.start()
        thread.join()
        qtbot.waitUntil(lambda: len(dialogs) == 2, timeout=5_000)
        assert dialogs[1].text() == "The folder has no images."
    finally:
        errors.uninstall()
    assert window.isVisible()


def test_main_shows_the_window_before_tensorflow_is_ready(qtbot, tmp_path, monkeypatch, capsys):
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    imported = threading.Event()
    monkeypatch.setattr(gui_app, "_import_tensorflow", lambda: imported.wait(10))
    seen = {}

    def poll():
        shown = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if not shown:
            return
        window = shown[0]
        seen.setdefault("ready_at_first_sight", window.state.tensorflow_ready)
        seen.setdefault("status", window.status_text())
        imported.set()
        if window.state.tensorflow_ready:
            seen["model_enabled"] = window.pages["Model"].isEnabled()
            timer.stop()
            window.close()

    timer = QTimer()
    timer.timeout.connect(poll)
    timer.start(20)
    assert gui_app.main([]) == 0
    assert seen["ready_at_first_sight"] is False
    assert seen["status"].startswith("Loading TensorFlow")
    assert seen["model_enabled"] is True
    assert QApplication.applicationName() == "TL Studio"
    assert not QApplication.windowIcon().isNull()


def test_main_explains_a_missing_display_instead_of_crashing(monkeypatch, capsys):
    monkeypatch.setattr(gui_app, "display_problem", lambda: "no display here")
    assert gui_app.main([]) == 1
    assert "no display here" in capsys.readouterr().err


def test_display_problems_name_what_to_install():
    linux = "linux"
    assert system_libs.display_problem({"QT_QPA_PLATFORM": "offscreen"}, linux) is None
    assert system_libs.display_problem({}, "darwin") is None
    assert "no display was found" in system_libs.display_problem({}, linux)
    assert system_libs.display_problem({"WAYLAND_DISPLAY": "wayland-0"}, linux, missing=["libxcb-cursor0"]) is None
    message = system_libs.display_problem({"DISPLAY": ":0"}, linux, missing=["libxcb-cursor0", "libxcb-icccm4"])
    assert "sudo apt-get install -y libxcb-cursor0 libxcb-icccm4" in message
    assert system_libs.display_problem({"DISPLAY": ":0"}, linux, missing=[]) is None


def test_install_runs_apt_get_as_root_and_prints_otherwise(monkeypatch, capsys):
    monkeypatch.setattr(system_libs, "missing_xcb_packages", lambda: ["libxcb-cursor0"])
    monkeypatch.setattr(system_libs.sys, "platform", "linux")
    monkeypatch.setattr(system_libs.shutil, "which", lambda name: "/usr/bin/apt-get")
    calls = []

    class Done:
        returncode = 0

    monkeypatch.setattr(system_libs.os, "geteuid", lambda: 0)
    assert system_libs.install_missing(run=lambda args, check: calls.append(args) or Done()) == 0
    assert calls == [["/usr/bin/apt-get", "install", "-y", "libxcb-cursor0"]]
    monkeypatch.setattr(system_libs.os, "geteuid", lambda: 1000)
    assert system_libs.install_missing(run=lambda args, check: calls.append(args) or Done()) == 0
    assert len(calls) == 1
    assert "sudo apt-get install -y libxcb-cursor0" in capsys.readouterr().err


def test_a_user_mistake_is_one_sentence_with_actions_and_the_rest_behind_details(qtbot):
    from tlstudio.core.spec.errors import WeightsError

    used = []
    error = WeightsError("The VGG16 weights are not on this computer. Download them from https://example.org/w.h5 "
                         "or run: tlstudio weights import FILE")
    dialog = errors.ErrorDialog(error, None, actions=[("Use EfficientNet-Lite0", lambda: used.append("lite0"))])
    qtbot.addWidget(dialog)
    assert dialog.text() == "The VGG16 weights are not on this computer."
    assert "https://example.org/w.h5" not in dialog.text()
    assert "https://example.org/w.h5" in dialog.detailedText()
    dialog.action_buttons["Use EfficientNet-Lite0"].click()
    assert used == ["lite0"]
    assert errors.first_sentence("One line only") == "One line only"
    assert errors.first_sentence("Version 1.2 is old. Update it.") == "Version 1.2 is old."
