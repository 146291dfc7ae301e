"""The GPU Doctor dialog: shows the report, copies it, fills itself in from a worker."""

from __future__ import annotations

from PySide6.QtGui import QGuiApplication

from tlstudio.core.train.devices import DeviceInfo
from tlstudio.core.train.doctor import DoctorReport, DriverInfo
from tlstudio.gui import doctor_dialog
from tlstudio.gui.doctor_dialog import DoctorDialog, open_doctor_dialog


def _report(gpu: bool) -> DoctorReport:
    found = [DeviceInfo("Intel Xeon", "CPU", None, None)]
    if gpu:
        found.insert(0, DeviceInfo("NVIDIA L4", "GPU", 24 * 2**30, "8.9"))
    return DoctorReport(
        tensorflow_version="2.21.0",
        keras_version="3.15.1",
        python_version="3.11.7",
        platform="Linux",
        built_with_cuda=True,
        cuda_version="12.5.1",
        cudnn_version="9",
        build_info={},
        devices=tuple(found),
        driver=DriverInfo("550.54.14", ("NVIDIA L4",), "nvidia-smi"),
        cuda_visible_devices=None,
        reason=None if gpu else "the CUDA 12.5.1 and cuDNN 9 libraries are missing",
    )


def test_shows_the_reason_and_the_full_text(qtbot):
    dialog = DoctorDialog(_report(gpu=False))
    qtbot.addWidget(dialog)
    assert "CPU only" in dialog.verdict.text()
    assert "libraries are missing" in dialog.verdict.text()
    assert dialog.text() == _report(gpu=False).text()


def test_gpu_verdict(qtbot):
    dialog = DoctorDialog(_report(gpu=True))
    qtbot.addWidget(dialog)
    assert dialog.verdict.text() == "TensorFlow uses 1 GPU."


def test_copy_puts_the_report_on_the_clipboard(qtbot):
    dialog = DoctorDialog(_report(gpu=False))
    qtbot.addWidget(dialog)
    QGuiApplication.clipboard().clear()
    dialog.copy_button.click()
    assert QGuiApplication.clipboard().text() == _report(gpu=False).text()


def test_waits_then_fills_in_from_the_worker(qtbot, monkeypatch):
    monkeypatch.setattr(doctor_dialog, "_diagnose", lambda on_event=None, should_stop=None: _report(gpu=True))
    dialog = open_doctor_dialog()
    qtbot.addWidget(dialog)
    assert dialog.report is None or dialog.report.uses_gpu
    qtbot.waitUntil(lambda: dialog.report is not None, timeout=10_000)
    assert "GPU: NVIDIA L4" in dialog.text()
    assert dialog.copy_button.isEnabled()


def test_failure_is_shown(qtbot, monkeypatch):
    def broken(on_event=None, should_stop=None):
        raise RuntimeError("TensorFlow failed to import")

    monkeypatch.setattr(doctor_dialog, "_diagnose", broken)
    dialog = open_doctor_dialog()
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: "could not examine" in dialog.verdict.text(), timeout=10_000)
    assert "TensorFlow failed to import" in dialog.text()
