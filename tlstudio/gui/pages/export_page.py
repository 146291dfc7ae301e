"""The Export page: write the trained model in the chosen formats, show the checks and what each costs.

It exports the last run (``ProjectState.last_run``) or a run folder the user
picks, with :func:`tlstudio.core.use.export.export_run` in a worker process
(:mod:`tlstudio.gui.process_worker`): the TFLite converters hold Python's
interpreter lock for seconds, which from a thread would freeze the window. The
process runs on the CPU (``EXPORT_ENV``), so it never competes with the app's
TensorFlow for GPU memory; converting and checking need no GPU. Every
artifact is run on validation images after writing and compared with the
in-app model; the table shows how closely each agrees (quantised ones: top-1
agreement with its interval and accuracy next to the in-app model's; one that
misses its rule is kept and marked "not recommended"), and the cost table its
size, latency and peak memory measured on this computer. Problems with the
destination (it exists, it is read-only, the disk is full) come from the
engine as clear errors in the app's error dialog.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from tlstudio.core.spec.errors import ExportError
from tlstudio.core.spec.events import Message, Progress
from tlstudio.core.use.export import DEFAULT_FORMATS, FORMATS, ExportReport, export_run
from tlstudio.gui.errors import show_error
from tlstudio.gui.process_worker import ProcessHandle, run_in_process
from tlstudio.gui.state import ProjectState
from tlstudio.gui.workers import JobKind

FORMAT_INFO = {
    "keras": ("Keras (.keras)", "The Keras 3 model: load it in Python with keras.saving.load_model()."),
    "savedmodel": ("TensorFlow SavedModel", "A folder for TensorFlow Serving and TF tools; signature "
                   "'serving_default' takes raw RGB images 0–255."),
    "tflite": ("TensorFlow Lite (float32)", "One file for phones and small devices, same accuracy as the "
               "in-app model."),
    "tflite-fp16": ("TensorFlow Lite (float16)", "Half the size of float32, nearly the same answers; the middle "
                    "ground when int8 loses too much accuracy."),
    "tflite-int8": ("TensorFlow Lite (int8)", "About 4× smaller and faster on phones and microcontrollers; "
                    "calibrated on training images of every class, judged on its accuracy."),
    "onnx": ("ONNX", "For ONNX Runtime, C#, C++ and other frameworks; input 'image', output 'probabilities'."),
}


EXPORT_ENV = {"CUDA_VISIBLE_DEVICES": "-1"}
"""Added to the export process's environment: it runs on the CPU."""


def default_destination(run_dir: Path) -> Path:
    """Where an export of ``run_dir`` goes unless the user chooses another folder."""
    return Path.home() / "TL Studio exports" / run_dir.name

REPLACE_LABEL = "Replace the folder if it exists"


class ExportPage(QWidget):
    """Choose formats and a destination, export, and read the round-trip check.

    ``export_finished(ExportReport | None)`` follows every export (None: failed or stopped).
    """

    export_finished = Signal(object)

    def __init__(self, state: ProjectState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.run_dir: Path | None = None
        self.report: ExportReport | None = None
        self._handle: ProcessHandle | None = None
        self._build()
        state.run_finished.connect(self._on_run_finished)
        state.tensorflow_ready_changed.connect(lambda _ready: self._update_enabled())
        if state.last_run is not None:
            self._on_run_finished(state.last_run)
        self._update_enabled()

    def _build(self) -> None:
        title = QLabel("Export")
        title.setObjectName("pageTitle")
        hint = QLabel("Save the trained classifier for other programs. Preprocessing is inside the model: every "
                      "format takes plain RGB pixels 0–255, and labels.txt lists the classes in output order.")
        hint.setWordWrap(True)

        run_box = QGroupBox("Trained model")
        self.run_label = QLabel()
        self.run_label.setWordWrap(True)
        self.run_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.choose_run_button = QPushButton("Use another run…")
        self.choose_run_button.setToolTip("Export an earlier training run: choose its run folder")
        self.choose_run_button.clicked.connect(self.choose_run)
        run_row = QHBoxLayout(run_box)
        run_row.addWidget(self.run_label, 1)
        run_row.addWidget(self.choose_run_button)

        formats_box = QGroupBox("Formats")
        grid = QGridLayout(formats_box)
        self.format_boxes: dict[str, QCheckBox] = {}
        for row, fmt in enumerate(FORMATS):
            name, description = FORMAT_INFO[fmt]
            box = QCheckBox(name)
            box.setChecked(fmt in DEFAULT_FORMATS)
            box.setToolTip(description)
            box.setWhatsThis(description)
            box.toggled.connect(lambda _on: self._update_enabled())
            note = QLabel(description)
            note.setWordWrap(True)
            grid.addWidget(box, row, 0)
            grid.addWidget(note, row, 1)
            self.format_boxes[fmt] = box
        grid.setColumnStretch(1, 1)

        destination_box = QGroupBox("Destination")
        self.destination_edit = QLineEdit()
        self.destination_edit.setPlaceholderText("A new folder for the exported files")
        self.destination_edit.setToolTip("The export is written to a temporary folder beside this one and renamed "
                                         "into place when complete, so a failed export never leaves half a folder.")
        self.destination_edit.textChanged.connect(lambda _text: self._update_enabled())
        self.browse_button = QPushButton("Choose…")
        self.browse_button.clicked.connect(self.choose_destination)
        self.overwrite_box = QCheckBox(REPLACE_LABEL)
        self.overwrite_box.setToolTip("Only an empty folder or an earlier TL Studio export is ever replaced")
        destination_layout = QGridLayout(destination_box)
        destination_layout.addWidget(self.destination_edit, 0, 0)
        destination_layout.addWidget(self.browse_button, 0, 1)
        destination_layout.addWidget(self.overwrite_box, 1, 0, 1, 2)

        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.start_export)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel_export)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.progress_label = QLabel()
        action_row = QHBoxLayout()
        action_row.addWidget(self.export_button)
        action_row.addWidget(self.cancel_button)
        action_row.addWidget(self.progress, 1)
        action_row.addWidget(self.progress_label, 1)

        self.result_label = QLabel()
        self.result_label.setWordWrap(True)
        self.result_label.setVisible(False)
        self.checks_table = QTableWidget(0, 6)
        self.checks_table.setHorizontalHeaderLabels(
            ["Format", "Artifact", "Largest difference", "Same top class (95% interval)", "Accuracy (in-app)",
             "Check"])
        self.checks_table.horizontalHeaderItem(2).setToolTip(
            "The largest difference in any class probability between the exported file and the in-app model, "
            "over the check images (float formats must stay within 0.0001)")
        self.checks_table.horizontalHeaderItem(3).setToolTip(
            "Share of check images on which the exported file picks the same class as the in-app model, with its "
            "95% Wilson interval (fp16 and int8: the interval must reach 95%)")
        self.checks_table.horizontalHeaderItem(4).setToolTip(
            "Accuracy on the labelled validation images, with the in-app model's in brackets (fp16 and int8 may "
            "lose at most 1 point, or one image on small sets)")
        self.checks_table.verticalHeader().setVisible(False)
        self.checks_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.checks_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.checks_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        self.costs_label = QLabel()
        self.costs_label.setWordWrap(True)
        self.costs_table = QTableWidget(0, 5)
        self.costs_table.setHorizontalHeaderLabels(["Format", "Size", "Latency median", "Latency p95", "Peak memory"])
        self.costs_table.horizontalHeaderItem(2).setToolTip("Per image at batch 1, after warm-up, in the format's "
                                                            "own runtime")
        self.costs_table.horizontalHeaderItem(4).setToolTip("The peak memory of a fresh process running only "
                                                            "this file in its runtime (runtime included)")
        self.costs_table.verticalHeader().setVisible(False)
        self.costs_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.costs_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.measure_box = QCheckBox("Measure what each file costs (size, latency, peak memory)")
        self.measure_box.setChecked(True)
        self.measure_box.setToolTip("Runs each file in its own runtime in a separate process; takes a few "
                                    "seconds per format")
        self.open_button = QPushButton("Open folder")
        self.open_button.setToolTip("Show the exported files in your file manager")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self.open_folder)
        results_box = QGroupBox("Round-trip check")
        results_layout = QVBoxLayout(results_box)
        results_layout.addWidget(self.result_label)
        results_layout.addWidget(self.checks_table, 1)
        results_layout.addWidget(self.costs_label)
        results_layout.addWidget(self.costs_table, 1)
        open_row = QHBoxLayout()
        open_row.addStretch(1)
        open_row.addWidget(self.open_button)
        results_layout.addLayout(open_row)

        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(hint)
        layout.addWidget(run_box)
        layout.addWidget(formats_box)
        layout.addWidget(destination_box)
        layout.addWidget(self.measure_box)
        layout.addLayout(action_row)
        layout.addWidget(results_box, 1)
        self._show_run()

    # ----- choosing -----

    def set_run(self, run_dir: str | Path | None) -> None:
        """Export this run folder; proposes a destination when none is typed yet."""
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if self.run_dir is not None and not self.destination_edit.text():
            self.destination_edit.setText(str(default_destination(self.run_dir)))
        self._show_run()
        self._update_enabled()

    def _on_run_finished(self, result) -> None:
        if result is not None and getattr(result, "run_dir", None) is not None:
            if self.run_dir is not None and self.destination_edit.text() == str(default_destination(self.run_dir)):
                self.destination_edit.clear()
            self.set_run(result.run_dir)

    def choose_run(self) -> None:
        from tlstudio.core.spec.paths import runs_dir
        from tlstudio.core.train.runs import load_run

        start = str(self.run_dir.parent if self.run_dir else runs_dir())
        folder = QFileDialog.getExistingDirectory(self, "Choose a run folder", start)
        if not folder:
            return
        try:
            load_run(folder)
        except Exception as error:
            show_error(self, error)
            return
        self.set_run(folder)

    def choose_destination(self) -> None:
        current = self.destination_edit.text() or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Export into which folder?", str(Path(current).parent))
        if folder:
            name = self.run_dir.name if self.run_dir else "export"
            self.destination_edit.setText(str(Path(folder) / name))

    def selected_formats(self) -> tuple[str, ...]:
        return tuple(fmt for fmt, box in self.format_boxes.items() if box.isChecked())

    def _show_run(self) -> None:
        if self.run_dir is None:
            self.run_label.setText("No trained model yet: train one on the Train page, or use an earlier run.")
            return
        accuracy = ""
        last = self.state.last_run
        metrics = getattr(last, "metrics", None) if last is not None and Path(last.run_dir) == self.run_dir else None
        if metrics and "val_accuracy" in metrics:
            accuracy = f" — validation accuracy {metrics['val_accuracy']:.1%}"
        self.run_label.setText(f"Run <b>{self.run_dir.name}</b>{accuracy}<br><small>{self.run_dir}</small>")

    def _update_enabled(self) -> None:
        exporting = self._handle is not None
        reasons = []
        if self.run_dir is None:
            reasons.append("train a model first")
        if not self.selected_formats():
            reasons.append("tick at least one format")
        if not self.destination_edit.text().strip():
            reasons.append("choose a destination folder")
        if not self.state.tensorflow_ready:
            reasons.append("wait for TensorFlow to load")
        self.export_button.setEnabled(not exporting and not reasons)
        self.export_button.setToolTip("Write the chosen formats and check each one" if not reasons
                                      else "To export: " + ", ".join(reasons) + ".")
        for widget in (*self.format_boxes.values(), self.destination_edit, self.browse_button,
                       self.overwrite_box, self.choose_run_button, self.measure_box):
            widget.setEnabled(not exporting)

    # ----- exporting -----

    def start_export(self) -> None:
        """Export the run in a worker process; results arrive in the table."""
        if self._handle is not None or self.run_dir is None:
            return
        destination = Path(self.destination_edit.text().strip()).expanduser()
        self.report = None
        self.checks_table.setRowCount(0)
        self.costs_table.setRowCount(0)
        self.costs_label.setText("")
        self.result_label.setVisible(False)
        self.open_button.setEnabled(False)
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.progress_label.setText("Starting the export: loading TensorFlow and the model…")
        self.cancel_button.setVisible(True)
        self.state.busy.emit("Exporting…")
        self._handle = run_in_process(
            partial(export_run, measure_costs=self.measure_box.isChecked()),
            self.run_dir,
            destination,
            self.selected_formats(),
            self.overwrite_box.isChecked(),
            on_event=self._on_event,
            on_done=self._on_done,
            on_error=self._on_error,
            on_cancel=self._on_cancelled,
            name="export", kind=JobKind.EXPORT, env=EXPORT_ENV,
        )
        self._handle.finished.connect(self._on_ended)
        self._update_enabled()

    def cancel_export(self) -> None:
        if self._handle is not None:
            self._handle.stop()
            self.progress_label.setText("Stopping…")

    def _on_event(self, event: object) -> None:
        if isinstance(event, Progress):
            if event.total:
                self.progress.setRange(0, event.total)
                self.progress.setValue(event.done)
            self.progress_label.setText(event.message)
            self.state.busy.emit(f"Exporting… {event.message}")
        elif isinstance(event, Message):
            self.progress_label.setText(event.text)

    def _on_done(self, report: ExportReport) -> None:
        self.report = report
        self._show_report(report)
        self.export_finished.emit(report)

    def _on_error(self, error: BaseException) -> None:
        destination = Path(self.destination_edit.text().strip()).expanduser()
        if isinstance(error, ExportError) and destination.exists() and not self.overwrite_box.isChecked():
            # The engine's message names its own options (overwrite=True, --overwrite); say it with this page's.
            error = ExportError(
                f"The folder {destination.name!r} already exists.\n{destination}\n"
                f"Tick “{REPLACE_LABEL}” to replace it (only an earlier TL Studio export is replaced), "
                "or choose another folder."
            )
            show_error(self, error, actions=[("Replace it", self.replace_and_export),
                                             ("Choose another folder…", self.choose_destination)])
        else:
            show_error(self, error)
        self.export_finished.emit(None)

    def replace_and_export(self) -> None:
        """Tick "Replace the folder if it exists" and export again (once the failed export has ended)."""
        self.overwrite_box.setChecked(True)
        QTimer.singleShot(0, self.start_export)

    def _on_cancelled(self) -> None:
        self.export_finished.emit(None)

    def _on_ended(self) -> None:
        self._handle = None
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        if self.report is None:
            self.progress_label.setText("")
        self.state.busy.emit("")
        self._update_enabled()

    def _show_report(self, report: ExportReport) -> None:
        self.progress_label.setText(f"Written to {report.destination}")
        self._show_checks(report)
        self._show_costs(report)
        if report.passed:
            self.result_label.setObjectName("okBanner")
            self.result_label.setText(f"Every exported file passed its check against the in-app model. "
                                      f"Files in {report.destination}")
        else:
            self.result_label.setObjectName("warningBanner")
            failed = ", ".join(f"{c.format} ({c.status})" for c in report.checks if not c.passed)
            self.result_label.setText(f"Some exported files missed their check: {failed}; see the table. They were "
                                      "written and kept; the others are fine to use.")
        self.result_label.style().unpolish(self.result_label)
        self.result_label.style().polish(self.result_label)
        self.result_label.setVisible(True)
        self.open_button.setEnabled(True)

    def _show_checks(self, report: ExportReport) -> None:
        self.checks_table.setRowCount(len(report.checks))
        for row, check in enumerate(report.checks):
            difference = "—" if check.max_abs_diff is None else f"{check.max_abs_diff:.2g}"
            low, high = check.agreement_interval
            accuracy = "—" if check.accuracy is None else f"{check.accuracy:.1%} ({check.reference_accuracy:.1%})"
            verdict = {"passed": "✔ passed", "failed": "✘ failed"}.get(check.status, "⚠ kept, NOT RECOMMENDED")
            cells = [
                FORMAT_INFO.get(check.format, (check.format,))[0],
                Path(check.path).name,
                difference,
                f"{check.top1_agreement:.0%} ({low:.0%}–{high:.0%})",
                accuracy,
                verdict + (f" — {check.message}" if check.message else ""),
            ]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(str(check.path) if column == 1 else text)
                self.checks_table.setItem(row, column, item)

    def _show_costs(self, report: ExportReport) -> None:
        self.costs_table.setRowCount(len(report.costs))
        self.costs_label.setText(f"What each file costs, measured on {report.machine} (batch 1, warm):"
                                 if report.costs else "Costs not measured.")
        for row, cost in enumerate(report.costs):
            cells = [
                FORMAT_INFO.get(cost.format, (cost.format,))[0],
                f"{cost.size_bytes / 1e6:.2f} MB" if cost.size_bytes >= 10_000 else f"{cost.size_bytes / 1e3:.1f} kB",
                "—" if cost.latency_median_ms is None else f"{cost.latency_median_ms:.3g} ms",
                "—" if cost.latency_p95_ms is None else f"{cost.latency_p95_ms:.3g} ms",
                "—" if cost.peak_memory_mb is None else f"{cost.peak_memory_mb:.0f} MiB",
            ]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(cost.error or cost.runtime)
                self.costs_table.setItem(row, column, item)

    def open_folder(self) -> bool:
        """Show the last export in the file manager."""
        if self.report is None:
            return False
        return QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.report.destination)))
