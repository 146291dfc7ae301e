"""The main window's Tools, Help and File ▸ Export for Server actions."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
from PySide6.QtCore import QSettings
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFileDialog, QMessageBox

from tlstudio.core.data import feature_cache
from tlstudio.core.data.dataset import scan_dataset
from tlstudio.core.data.feature_cache import FeatureCache, FeatureSetKey
from tlstudio.core.spec.recipe import DataSpec
from tlstudio.gui import doctor_dialog, workers
from tlstudio.gui.main_window import MainWindow

FEATURES_PER_IMAGE = 2**17
"""float32 values per image: 512 KiB, so 36 images make 18 MB."""


@pytest.fixture
def window(qtbot, tmp_path):
    win = MainWindow(settings=QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    win.show()
    yield win
    assert workers.stop_all(60_000)


def fill_cache(image_root) -> int:
    """Store made-up features for the sample images; the bytes the cache holds afterwards."""
    items = list(scan_dataset([image_root]).train) + list(scan_dataset([image_root]).val)
    key = FeatureSetKey("tiny", "block3_pool:0", 32, "caffe", "GlobalAveragePooling2D", "w" * 32, "s" * 32)
    FeatureCache().features(key, items, lambda chosen: np.ones((len(chosen), FEATURES_PER_IMAGE), np.float32))
    return feature_cache.status().bytes


def test_clear_feature_cache_shows_the_size_asks_and_reports_what_was_freed(qtbot, window, image_root,
                                                                             monkeypatch):
    size = fill_cache(image_root)
    assert size >= 36 * FEATURES_PER_IMAGE * 4
    window.update_cache_action()
    assert window.clear_cache_action.text() == f"Clear Feature Cache ({size / 2**20:.0f} MB)…"
    assert window.clear_cache_action.isEnabled()

    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *args, **kw: asked.append(args[2]) or QMessageBox.StandardButton.No)
    window.clear_cache_action.trigger()
    assert "MB" in asked[0]
    assert feature_cache.status().bytes == size

    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kw: QMessageBox.StandardButton.Yes)
    window.clear_cache_action.trigger()
    qtbot.waitUntil(lambda: "freed" in window.statusBar().currentMessage(), timeout=30_000)
    assert window.statusBar().currentMessage() == f"Feature cache cleared: {size / 2**20:.0f} MB freed."
    assert feature_cache.status().bytes == 0
    assert window.clear_cache_action.text() == "Clear Feature Cache (0 MB)…"
    assert not window.clear_cache_action.isEnabled()


def test_gpu_doctor_opens_the_dialog(qtbot, window, monkeypatch):
    report = doctor_dialog._sample_report()
    monkeypatch.setattr(doctor_dialog, "_diagnose", lambda on_event=None, should_stop=None: report)
    window.state.set_tensorflow_ready(True)
    assert window.doctor_action.isEnabled()
    window.doctor_action.trigger()
    dialog = window.doctor_dialog
    assert isinstance(dialog, doctor_dialog.DoctorDialog) and dialog.isVisible()
    qtbot.waitUntil(lambda: dialog.report is report, timeout=10_000)
    dialog.close()


def test_gpu_doctor_waits_for_tensorflow(window):
    assert not window.state.tensorflow_ready
    assert not window.doctor_action.isEnabled()
    window.state.set_tensorflow_ready(True)
    assert window.doctor_action.isEnabled()
    window.state.set_tensorflow_ready(False)
    assert not window.doctor_action.isEnabled()


def test_export_for_server_saves_then_copies_the_command(window, tmp_path, image_root, monkeypatch):
    window.state.update(data=DataSpec(folders=(str(image_root),)))
    path = tmp_path / "my project" / "flowers.json"
    path.parent.mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))
    QGuiApplication.clipboard().clear()
    window.export_server_action.trigger()
    message = window.export_box.text()
    expected = f"tlstudio train --project {shlex.quote(str(path.resolve()))}"
    assert QGuiApplication.clipboard().text() == expected
    assert path.is_file() and not window.state.dirty
    assert "'" in expected and "TF_CONFIG" in message and str(image_root) in message
    window.export_box.close()


def test_export_for_server_stops_when_save_as_is_cancelled(window, monkeypatch):
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: ("", ""))
    QGuiApplication.clipboard().setText("unchanged")
    assert window.export_for_server() is None
    assert QGuiApplication.clipboard().text() == "unchanged"
    assert window.state.path is None
