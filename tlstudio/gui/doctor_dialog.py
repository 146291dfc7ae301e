"""Help ▸ GPU Doctor: why TensorFlow does or does not use the GPU, with a Copy button.

The dialog shows :meth:`tlstudio.core.train.doctor.DoctorReport.text`, the same text
``tlstudio doctor`` prints, in a read-only monospaced box, so a user can read
the likely reason and paste the whole report into a bug report.
:func:`open_doctor_dialog` shows the dialog at once and fills it in from a
worker thread, since examining TensorFlow and running ``nvidia-smi`` take a
moment. Run ``python -m tlstudio.gui.doctor_dialog`` to see it with a sample report.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from tlstudio.core.train.doctor import DoctorReport

WAITING_TEXT = "Examining TensorFlow, its devices and the NVIDIA driver…"


class DoctorDialog(QDialog):
    """Shows one doctor report (or a waiting or failure message) and copies it to the clipboard."""

    def __init__(self, report: DoctorReport | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("doctorDialog")
        self.setWindowTitle("GPU Doctor")
        self.resize(720, 420)
        self.report: DoctorReport | None = None
        self.worker: Any = None
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.text_box = QPlainTextEdit()
        self.text_box.setReadOnly(True)
        self.text_box.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.text_box.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = QPushButton("&Copy")
        self.copy_button.setToolTip("Copy the report to the clipboard, e.g. for a bug report")
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.copy_button.clicked.connect(self.copy_to_clipboard)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.verdict)
        layout.addWidget(self.text_box, 1)
        layout.addWidget(buttons)
        if report is None:
            self._show(WAITING_TEXT, "", copyable=False)
        else:
            self.set_report(report)

    def set_report(self, report: DoctorReport) -> None:
        """Show ``report``: the verdict on top, the full text below."""
        self.report = report
        if report.uses_gpu:
            verdict = f"TensorFlow uses {len(report.gpus)} GPU{'s' if len(report.gpus) > 1 else ''}."
        else:
            verdict = f"TensorFlow runs on the CPU only. Likely reason: {report.reason}"
        self._show(verdict, report.text(), copyable=True)

    def set_failed(self, error: BaseException) -> None:
        """Say that the examination itself failed, and why."""
        self._show(f"The doctor could not examine TensorFlow: {error}", f"{type(error).__name__}: {error}", True)

    def text(self) -> str:
        """The text the Copy button copies."""
        return self.text_box.toPlainText()

    def copy_to_clipboard(self) -> None:
        """Put the report's text on the system clipboard."""
        QGuiApplication.clipboard().setText(self.text())

    def _show(self, verdict: str, text: str, copyable: bool) -> None:
        self.verdict.setText(verdict)
        self.text_box.setPlainText(text)
        self.copy_button.setEnabled(copyable)


def _diagnose(on_event: Any = None, should_stop: Any = None) -> DoctorReport:
    """:func:`tlstudio.core.train.doctor.diagnose` in the shape ``run_in_thread`` calls."""
    from tlstudio.core.train.doctor import diagnose

    return diagnose()


def open_doctor_dialog(parent: QWidget | None = None) -> DoctorDialog:
    """Show the dialog now and fill it in when the examination, run in a worker thread, is done."""
    from tlstudio.gui.workers import JobKind, run_in_thread

    dialog = DoctorDialog(parent=parent)
    dialog.show()
    dialog.worker = run_in_thread(
        _diagnose, on_done=dialog.set_report, on_error=dialog.set_failed, name="GPU diagnosis",
        kind=JobKind.DEVICES,
    )
    return dialog


def _sample_report() -> DoctorReport:
    from tlstudio.core.train.devices import DeviceInfo
    from tlstudio.core.train.doctor import DriverInfo

    return DoctorReport(
        tensorflow_version="2.21.0",
        keras_version="3.15.1",
        python_version="3.11.7",
        platform="Linux-6.8",
        built_with_cuda=True,
        cuda_version="12.5.1",
        cudnn_version="9",
        build_info={"is_cuda_build": True, "cuda_version": "12.5.1", "cudnn_version": "9"},
        devices=(DeviceInfo("Intel Xeon", "CPU", None, None),),
        driver=DriverInfo(version=None, gpus=(), source="not found"),
        cuda_visible_devices=None,
        reason="no NVIDIA driver was found (no /proc/driver/nvidia/version and no nvidia-smi).",
    )


if __name__ == "__main__":
    from PySide6.QtWidgets import QApplication

    application = QApplication([])
    DoctorDialog(_sample_report()).exec()
