"""Launch order: the window paints before heavy work starts; TensorFlow loads off the GUI thread."""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
import threading
import time

import pytest
from PySide6.QtCore import QEvent, QObject, QSettings, Qt, QTimer
from PySide6.QtWidgets import QLabel, QMessageBox, QWidget

from tlstudio.gui import app as gui_app
from tlstudio.gui import pyside_compat
from tlstudio.gui.main_window import PAGES, MainWindow


class _PaintClock(QObject):
    """Records when a widget handles its paint events."""

    def __init__(self) -> None:
        super().__init__()
        self.painted: list[float] = []

    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.Type.Paint:
            self.painted.append(time.perf_counter())
        return False


def test_when_painted_waits_for_the_first_paint(qtbot):
    widget = QLabel("content")
    qtbot.addWidget(widget)
    clock = _PaintClock()
    widget.installEventFilter(clock)
    called: list[float] = []
    gui_app.when_painted(widget, lambda: called.append(time.perf_counter()), fallback_ms=60_000)
    qtbot.wait(100)
    assert called == []  # not shown, not painted: nothing starts
    widget.show()
    qtbot.waitUntil(lambda: len(called) == 1, timeout=5_000)
    assert clock.painted and called[0] > clock.painted[0]
    widget.update()
    qtbot.wait(100)
    assert len(called) == 1  # once only


def test_when_painted_falls_back_when_no_paint_comes(qtbot):
    widget = QWidget()  # never shown: no paint
    qtbot.addWidget(widget)
    called: list[bool] = []
    gui_app.when_painted(widget, lambda: called.append(True), fallback_ms=50)
    qtbot.waitUntil(lambda: called == [True], timeout=5_000)


def test_loader_imports_the_pages_then_tensorflow_off_the_gui_thread(qtbot, monkeypatch):
    threads: dict[str, int] = {}
    order: list[str] = []
    monkeypatch.setattr(gui_app, "_import_tensorflow", lambda: (order.append("tensorflow"),
                                                               threads.setdefault("tf", threading.get_ident())))
    loader = gui_app.tensorflow_loader(["json", "tlstudio.gui.no_such_page_module"])
    loader.modules_ready.connect(lambda: order.append("modules"), Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignal(loader.ready, timeout=10_000):
        loader.start()
    loader.wait()
    assert order == ["modules", "tensorflow"]  # a missing module does not stop the load
    assert threads["tf"] != threading.get_ident()


def test_loader_imports_tensorflow_only_once_the_pages_are_built(qtbot, monkeypatch):
    order: list[str] = []
    pages_built = threading.Event()
    monkeypatch.setattr(gui_app, "_import_tensorflow", lambda: order.append("tensorflow"))
    loader = gui_app.tensorflow_loader(["json"], pages_built)
    loader.modules_ready.connect(lambda: order.append("modules"), Qt.ConnectionType.DirectConnection)
    loader.start()
    qtbot.waitUntil(lambda: order == ["modules"], timeout=10_000)
    qtbot.wait(300)
    assert order == ["modules"]  # waiting for the pages
    pages_built.set()
    qtbot.waitUntil(lambda: order == ["modules", "tensorflow"], timeout=10_000)
    loader.wait()


def test_loader_does_not_wait_for_pages_that_never_finish(qtbot, monkeypatch):
    monkeypatch.setattr(gui_app, "PAGES_WAIT_S", 0.2)
    monkeypatch.setattr(gui_app, "_import_tensorflow", lambda: None)
    loader = gui_app.tensorflow_loader([], threading.Event())
    with qtbot.waitSignal(loader.ready, timeout=10_000):
        loader.start()
    loader.wait()


def test_background_page_building_builds_every_page_then_says_so(qtbot, tmp_path):
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    window = MainWindow()
    qtbot.addWidget(window)
    done = threading.Event()
    window.build_pages_in_background(done.set)
    qtbot.waitUntil(done.is_set, timeout=30_000)
    assert [window.stack.widget(i).objectName() for i in range(len(PAGES))] == [
        f"{title.lower()}Page" for title, *_ in PAGES
    ]


def test_loader_reports_a_failed_import(qtbot, monkeypatch):
    def broken() -> None:
        raise ImportError("libtensorflow_framework.so.2: cannot open shared object file")

    monkeypatch.setattr(gui_app, "_import_tensorflow", broken)
    loader = gui_app.tensorflow_loader()
    with qtbot.waitSignal(loader.failed, timeout=10_000) as blocker:
        loader.start()
    loader.wait()
    assert "libtensorflow_framework" in str(blocker.args[0])


def test_main_starts_loading_only_after_the_window_has_painted(qtbot, tmp_path, monkeypatch):
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    clock = _PaintClock()
    seen: dict[str, object] = {}
    original_show = MainWindow.show

    def show(window) -> None:
        window.installEventFilter(clock)
        seen["window"] = window
        original_show(window)

    def load() -> None:
        seen["loaded_at"] = time.perf_counter()

    def close_when_loaded() -> None:
        window = seen.get("window")
        if window is not None and window.state.tensorflow_ready:
            timer.stop()
            window.close()

    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kw: QMessageBox.StandardButton.Discard)
    monkeypatch.setattr(MainWindow, "show", show)
    monkeypatch.setattr(gui_app, "_import_tensorflow", load)
    timer = QTimer()
    timer.timeout.connect(close_when_loaded)
    timer.start(20)
    assert gui_app.main([]) == 0
    assert clock.painted and seen["loaded_at"] > clock.painted[0]


def test_a_page_that_fails_to_build_does_not_stop_the_others_or_hold_tensorflow_back(qtbot, tmp_path, monkeypatch):
    from tlstudio.gui import main_window

    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    original = main_window.load_page

    def broken_model_page(module, class_name, title, state):
        if title == "Model":
            raise RuntimeError("the Model page cannot be built")
        return original(module, class_name, title, state)

    monkeypatch.setattr(main_window, "load_page", broken_model_page)
    window = MainWindow()
    qtbot.addWidget(window)
    done = threading.Event()
    with qtbot.captureExceptions() as exceptions:
        window.build_pages_in_background(done.set)
        qtbot.waitUntil(done.is_set, timeout=30_000)
    assert [str(error) for _type, error, _trace in exceptions] == ["the Model page cannot be built"]
    built = [window.stack.widget(i).objectName() for i in range(len(PAGES))]
    assert built == [f"{title.lower()}Page" if title != "Model" else "" for title, *_ in PAGES]


def test_closing_the_window_before_its_pages_are_built_does_not_wait_for_them(qtbot, tmp_path, monkeypatch):
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    original_show = MainWindow.show

    def show_then_close(window) -> None:
        original_show(window)
        QTimer.singleShot(300, window.close)

    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kw: QMessageBox.StandardButton.Discard)
    monkeypatch.setattr(MainWindow, "show", show_then_close)
    monkeypatch.setattr(MainWindow, "build_pages_in_background", lambda window, then=None: None)  # never done
    monkeypatch.setattr(gui_app, "_import_tensorflow", lambda: None)
    monkeypatch.setattr(gui_app, "PAGES_WAIT_S", 60.0)
    started = time.monotonic()
    assert gui_app.main([]) == 0
    assert time.monotonic() - started < 30


def test_plain_imports_sets_pysides_import_hook_aside_and_back():
    """Pins PySide6's private import hook: if an upgrade changes it, this fails first."""
    assert pyside_compat.feature_import_active()  # PySide6 installs it when imported
    hook = builtins.__import__
    with pyside_compat.plain_imports():
        assert builtins.__import__ is builtins.__orig_import__
        import json  # noqa: F401  (imports still work)
    assert builtins.__import__ is hook


def test_page_modules_are_importable_for_the_loader():
    import importlib

    for _title, module, class_name, *_rest in PAGES:
        assert hasattr(importlib.import_module(module), class_name)


_LOADER_SCRIPT = """
import sys
from PySide6.QtCore import QCoreApplication
from tlstudio.gui import app as gui_app

application = QCoreApplication([])
loader = gui_app.tensorflow_loader([])
loader.ready.connect(application.quit)
loader.failed.connect(lambda error: (print(error, file=sys.stderr), application.exit(1)))
loader.start()
code = application.exec()
loader.wait()
print("loaded" if code == 0 else "failed", flush=True)
"""


@pytest.mark.parametrize("level", [None, "0"])
def test_the_apps_tensorflow_load_hides_its_cpp_lines_unless_asked(level):
    """What ``make run`` prints in the terminal: no oneDNN or CUDA notice, unless TF_CPP_MIN_LOG_LEVEL asks."""
    from tlstudio.core.spec import tensorflow_load

    env = {k: v for k, v in os.environ.items() if k != tensorflow_load.LOG_LEVEL_ENV}
    if level is not None:
        env[tensorflow_load.LOG_LEVEL_ENV] = level
    result = subprocess.run([sys.executable, "-c", _LOADER_SCRIPT], capture_output=True, env=env, timeout=300)
    assert result.stdout.strip() == b"loaded", result.stderr[-2000:]
    native = [line for line in result.stderr.splitlines(keepends=True) if tensorflow_load.is_native_log_line(line)]
    assert bool(native) == (level is not None), native[:3]
