"""A bar that offers to decode every image when a scan found damaged-looking files.

The header scan keeps files whose pixel data is corrupt; when the scan already
found some damaged files, others may be damaged too. The bar offers
:func:`tlstudio.core.data.verify.verify_images` in a background worker, with
progress and Cancel, and emits the report when done; the page puts the bad
images into its Problems list.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from tlstudio.core.data.dataset import Dataset
from tlstudio.core.data.verify import VerifyReport, suspicious_files, verify_images
from tlstudio.core.spec.events import Progress
from tlstudio.core.spec.text import counted
from tlstudio.gui.workers import WorkerHandle, run_in_thread


class VerifyBar(QWidget):
    """Hidden until :meth:`offer` is given a dataset with suspicious files."""

    verified = Signal(object)  # a VerifyReport

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._dataset: Dataset | None = None
        self._handle: WorkerHandle | None = None
        self._checked: set[int] = set()
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.verify_button = QPushButton("Verify every image")
        self.verify_button.setToolTip("Decode every image fully, in the background, and list the damaged ones "
                                      "under Problems so that training never meets them")
        self.verify_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.verify_button)
        layout.addWidget(self.cancel_button)
        self._show_running(False)
        self.setVisible(False)

    def offer(self, dataset: Dataset | None) -> None:
        """Show the offer when ``dataset`` has suspicious files and has not been verified yet."""
        if self._handle is not None:
            return
        self._dataset = dataset
        suspicious = suspicious_files(dataset) if dataset is not None else ()
        if not suspicious or id(dataset) in self._checked:
            self.setVisible(False)
            return
        self.label.setText(
            f"{counted(len(suspicious), 'file')} {'looks' if len(suspicious) == 1 else 'look'} damaged (see Problems); other images may be damaged in ways "
            "a quick scan cannot see."
        )
        self.setVisible(True)

    def is_running(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        if self._dataset is None or self._handle is not None:
            return
        self._show_running(True)
        self.progress.setRange(0, 0)
        self._handle = run_in_thread(
            verify_images, self._dataset, on_event=self._on_event, on_done=self._on_done,
            on_cancel=self._on_cancel, name="verifying images",
        )
        self._handle.finished.connect(self._on_finished)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.stop()

    def _on_event(self, event: object) -> None:
        if isinstance(event, Progress) and event.task == "verify" and event.total:
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)
            self.progress.setFormat(f"%v / %m ({event.message})")

    def _on_done(self, report: VerifyReport) -> None:
        self._checked.add(id(report.dataset))
        self.label.setText(report.summary())
        self.setVisible(False)
        self.verified.emit(report)

    def _on_cancel(self) -> None:
        self.label.setText("Verifying was cancelled; nothing changed.")

    def _on_finished(self) -> None:
        self._handle = None
        self._show_running(False)

    def _show_running(self, running: bool) -> None:
        self.progress.setVisible(running)
        self.cancel_button.setVisible(running)
        self.verify_button.setVisible(not running)
