"""The launch benchmark's pixel check: a blank window must not count as painted."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QWidget

from tlstudio.gui.main_window import MainWindow

_SPEC = importlib.util.spec_from_file_location("speed_benchmark", Path(__file__).parents[2] / "benchmarks" / "speed.py")
speed = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(speed)


def test_a_blank_window_is_not_painted_content(qtbot):
    blank = QWidget()
    blank.resize(400, 300)
    blank.setStyleSheet("background: #336699")
    qtbot.addWidget(blank)
    assert not speed._window_has_content(blank)  # not shown yet: nothing on the screen
    blank.show()
    qtbot.waitExposed(blank)
    qtbot.wait(100)
    assert not speed._window_has_content(blank)  # on the screen, but one colour


def test_the_main_window_reads_back_as_content(qtbot, tmp_path):
    window = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: speed._window_has_content(window), timeout=10_000)
