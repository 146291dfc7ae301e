"""The Runs page: every training run, its recipe and final metrics, and two runs' curves compared.

Runs are read with :func:`tlstudio.core.train.runs.list_runs` (the runs folder in
the user's data directory, or another folder the user opens), newest first,
in a worker. Each row sums up the recipe (base model, cut tensor, head,
epochs) and the final metrics. Selecting one run shows its loss and accuracy
curves; selecting two overlays them. "Use as current run" makes the selected
run the project's last run, so the Evaluate, Predict and Export pages follow.
The Status column says how a run ended ("interrupted: REASON" for a run an
error or a kill ended early); "Resume" continues an interrupted or stopped run
in a worker, with the run's own recipe. Run folders that cannot be read are
named under the list with the reason.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelectionModel, QSignalBlocker, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from tlstudio.core.spec.bases import base_info
from tlstudio.core.spec.errors import UserError
from tlstudio.core.spec.events import EpochEnded
from tlstudio.core.spec.text import counted

from tlstudio.core.train import runs as core_runs
from tlstudio.core.train.run_notes import RunNotes, read_notes, write_notes
from tlstudio.gui import workers
from tlstudio.gui.state import ProjectState
from tlstudio.gui.widgets.run_curves import RunCurves

COLUMNS = ("Run", "Finished", "Base model", "Cut tensor", "Head", "Epochs", "Val accuracy", "Val loss", "Data",
           "Classes", "Notes", "Status")
TITLE_COLUMN, NOTES_COLUMN = 0, COLUMNS.index("Notes")
ALL_DATA = "All data sets"


def read_runs(root: str | None, on_event=None, should_stop=None) -> core_runs.RunListing:
    """The runs in ``root`` (None: the runs folder), newest first, and the broken run folders (in a worker thread)."""
    return core_runs.scan_runs(root)


def resume_run(path: Path, on_event=None, should_stop=None) -> Any:
    """Continue the interrupted or stopped run in ``path`` (in a worker thread); its RunResult."""
    from tlstudio.core.train import training

    return training.resume(path, on_event=on_event, should_stop=should_stop)


def data_summary(run: core_runs.Run) -> str:
    """The run's image folders by name (``landscapes``, ``train + extra``), the data set it learnt from."""
    return " + ".join(Path(folder).name for folder in run.recipe.data.folders) or "—"


def base_summary(run: core_runs.Run) -> str:
    base = run.recipe.base
    if base.name == "file":
        name = Path(base.model_file or "model file").name
    else:
        name = base_info(base.name).label
        if base.include_top:
            name += " + top"
    weights = "" if base.weights == "imagenet" or base.name == "file" else f", {base.weights} weights"
    return f"{name} @ {base.input_size}px{weights}"


def head_summary(run: core_runs.Run) -> str:
    head = run.recipe.head
    parts = ["avg pool" if head.pooling == "avg" else "flatten"]
    if head.batch_norm:
        parts.append("BN")
    if head.hidden_units:
        parts.append("dense " + "-".join(str(u) for u in head.hidden_units))
    if head.dropout:
        parts.append(f"dropout {head.dropout:g}")
    return ", ".join(parts)


def epochs_summary(run: core_runs.Run) -> str:
    ran = len(run.history.get("loss", ()))
    training = run.recipe.training
    planned = training.epochs + training.fine_tune_epochs
    text = f"{ran} of {planned}" if ran and ran != planned else str(ran or planned)
    if training.fine_tune_epochs:
        text += f" ({training.fine_tune_epochs} fine-tune)"
    return text


def _metric(value: Any, percent: bool) -> str:
    if value is None or not isinstance(value, (int, float)) or math.isnan(float(value)):
        return "—"
    return f"{value:.1%}" if percent else f"{value:.3f}"


def _finished(run: core_runs.Run) -> str:
    try:
        stamp = (run.path / core_runs.METRICS_FILE).stat().st_mtime
    except OSError:
        return ""
    return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")


class RunsPage(QWidget):
    """The list of runs, their curves, and opening one as the current run."""

    runs_listed = Signal(list)

    def __init__(self, state: ProjectState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.root: str | None = None
        self.runs: list[core_runs.Run] = []
        self.broken: list[core_runs.BrokenRun] = []
        self.job: workers.WorkerHandle | None = None
        self.resume_job: workers.WorkerHandle | None = None
        self._refresh_again = False

        self.folder_label = QLabel()
        self.folder_label.setWordWrap(True)
        self.folder_label.setTextFormat(Qt.TextFormat.RichText)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.choose_button = QPushButton("Other folder…")
        self.choose_button.setToolTip("List the runs in another folder (one holding run folders).")
        self.choose_button.clicked.connect(self._choose_root)
        self.use_button = QPushButton("Use as current run")
        self.use_button.setToolTip("Make the selected run the project's last run: the Evaluate, Predict and Export "
                                   "pages then show it.")
        self.use_button.clicked.connect(self.use_selected)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the selected interrupted or stopped run from its last finished "
                                      "epoch, with its own recipe.")
        self.resume_button.clicked.connect(self.resume_selected)
        self.folder_button = QPushButton("Show in folder")
        self.folder_button.clicked.connect(self.show_selected_in_folder)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("runsTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.SelectedClicked
                                   | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.table.setToolTip("Click a selected run's name or notes (or press F2) to edit them; they are saved "
                              "in the run folder.")
        self.table.itemChanged.connect(self._on_item_changed)
        self.notes: dict[Path, RunNotes] = {}
        self.data_filter = QComboBox()
        self.data_filter.setToolTip("Show only the runs trained on one data set (their image folders).")
        self.data_filter.currentIndexChanged.connect(lambda _: self._apply_filter())
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        header = self.table.horizontalHeader()
        for column in range(len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.table.itemDoubleClicked.connect(lambda _item: self.use_selected())
        self.curves_title = QLabel()
        self.curves_title.setWordWrap(True)
        self.curves_title.setTextFormat(Qt.TextFormat.RichText)
        self.curves = RunCurves()

        top = QHBoxLayout()
        top.addWidget(self.folder_label, 1)
        top.addWidget(self.data_filter)
        top.addWidget(self.refresh_button)
        top.addWidget(self.choose_button)
        top.addWidget(self.folder_button)
        top.addWidget(self.resume_button)
        top.addWidget(self.use_button)
        lower = QWidget()
        lower_column = QVBoxLayout(lower)
        lower_column.setContentsMargins(0, 0, 0, 0)
        lower_column.addWidget(self.curves_title)
        lower_column.addWidget(self.curves, 1)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(lower)
        splitter.setSizes([300, 380])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(top)
        layout.addWidget(splitter, 1)

        state.run_finished.connect(lambda _result: self.refresh())
        state.tensorflow_ready_changed.connect(lambda _ready: self._update_buttons())
        self._on_selection()
        self.refresh()

    # ----- listing ------------------------------------------------------------------------------------------

    def folder(self) -> Path:
        return Path(self.root) if self.root is not None else core_runs.paths.runs_dir()

    def refresh(self) -> None:
        """Read the runs folder again in a worker."""
        if self.job is not None:
            self._refresh_again = True
            return
        self.folder_label.setText(f"Reading runs in {html.escape(str(self.folder()))}…")
        job = workers.run_in_thread(read_runs, self.root, on_done=self.show_listing, on_error=self.state.error.emit,
                                    name="listing runs", kind=workers.JobKind.RUNS)
        job.finished.connect(lambda j=job: self._on_finished(j))
        self.job = job

    def _on_finished(self, job: workers.WorkerHandle) -> None:
        if self.job is job:
            self.job = None
            if self._refresh_again:
                self._refresh_again = False
                self.refresh()

    def _choose_root(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder of runs", str(self.folder()))
        if folder:
            self.root = folder
            self.refresh()

    def show_listing(self, listing: core_runs.RunListing) -> None:
        """Show a :func:`~tlstudio.core.train.runs.scan_runs` result: the runs and the broken folders."""
        self.show_runs(listing.runs, listing.broken)

    def show_runs(self, runs: list[core_runs.Run], broken: list[core_runs.BrokenRun] | tuple = ()) -> None:
        """Fill the table with these runs, keeping the selection by run folder."""
        selected = {run.path for run in self.selected_runs()}
        self.runs = list(runs)
        self.broken = list(broken)
        count = len(self.runs)
        folder = html.escape(str(self.folder()))
        text = (
            f"<b>{counted(count, 'run')}</b> in <span style='color:gray'>{folder}</span>. "
            "Select one to see its curves, two to compare them."
            if count else f"No runs yet in <span style='color:gray'>{folder}</span>: train a model first."
        )
        if self.broken:
            listed = "; ".join(f"{html.escape(b.name)} ({html.escape(b.reason)})" for b in self.broken[:5])
            text += f"<br><span style='color:#b35c00'>{counted(len(self.broken), 'broken run folder')}, not listed: {listed}</span>"
        self.folder_label.setText(text)
        self.table.blockSignals(True)
        self.table.setRowCount(count)
        for row, run in enumerate(self.runs):
            notes = self.notes[run.path] = read_notes(run.path)
            cells = (
                notes.title or run.name, _finished(run), base_summary(run), run.recipe.cut_tensor or "default",
                head_summary(run), epochs_summary(run), _metric(run.metrics.get("val_accuracy"), True),
                _metric(run.metrics.get("val_loss"), False), data_summary(run), str(len(run.classes)),
                notes.notes.replace("\n", " "), run.state_text,
            )
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if 5 <= column <= 7 or column == COLUMNS.index("Classes"):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if column not in (TITLE_COLUMN, NOTES_COLUMN):
                    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                if column == TITLE_COLUMN:
                    item.setToolTip(f"{run.path}\nClasses: {', '.join(run.classes)}\nClick again to rename.")
                self.table.setItem(row, column, item)
        self.table.blockSignals(False)
        self._fill_filter()
        self.table.clearSelection()
        for row, run in enumerate(self.runs):
            if run.path in selected:
                self._add_row_to_selection(row)
        if not self.table.selectionModel().hasSelection() and self.runs:
            self.table.selectRow(0)
        self._on_selection()
        self.runs_listed.emit(self.runs)

    def _fill_filter(self) -> None:
        current = self.data_filter.currentText()
        blocker = QSignalBlocker(self.data_filter)
        self.data_filter.clear()
        self.data_filter.addItem(ALL_DATA)
        self.data_filter.addItems(sorted({data_summary(run) for run in self.runs}))
        self.data_filter.setCurrentIndex(max(0, self.data_filter.findText(current)))
        del blocker
        self._apply_filter()

    def filter_data(self, data: str | None) -> None:
        """Show only the runs trained on ``data`` (as in the Data column); None shows every run."""
        self.data_filter.setCurrentIndex(max(0, self.data_filter.findText(data or ALL_DATA)))

    def _apply_filter(self) -> None:
        chosen = self.data_filter.currentText()
        for row, run in enumerate(self.runs):
            self.table.setRowHidden(row, chosen not in ("", ALL_DATA) and data_summary(run) != chosen)

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        """Save an edited title or notes in the run folder; a refused edit shows why and reverts."""
        row, column = item.row(), item.column()
        if column not in (TITLE_COLUMN, NOTES_COLUMN) or row >= len(self.runs):
            return
        run = self.runs[row]
        old = self.notes.get(run.path, RunNotes())
        text = item.text().strip()
        try:
            if column == TITLE_COLUMN:
                new = RunNotes("" if text == run.name else text, old.notes)
            else:
                new = RunNotes(old.title, text)
            write_notes(run.path, new)
        except UserError as error:
            self.table.blockSignals(True)
            item.setText(old.title or run.name if column == TITLE_COLUMN else old.notes)
            self.table.blockSignals(False)
            self.state.error.emit(error)
            return
        self.notes[run.path] = new
        if column == TITLE_COLUMN and not new.title:
            self.table.blockSignals(True)
            item.setText(run.name)
            self.table.blockSignals(False)

    def _add_row_to_selection(self, row: int) -> None:
        index = self.table.model().index(row, 0)
        flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
        self.table.selectionModel().select(index, flags)

    # ----- selection ----------------------------------------------------------------------------------------

    def selected_runs(self) -> list[core_runs.Run]:
        rows = sorted(index.row() for index in self.table.selectionModel().selectedRows())
        return [self.runs[row] for row in rows if row < len(self.runs)]

    def select_runs(self, names: list[str]) -> None:
        """Select the runs with these folder names (the curves follow)."""
        self.table.clearSelection()
        for row, run in enumerate(self.runs):
            if run.name in names:
                self._add_row_to_selection(row)

    def _on_selection(self) -> None:
        chosen = self.selected_runs()
        shown = chosen[:2]
        self.curves.set_runs([(run.name, run.history) for run in shown])
        if not shown:
            self.curves_title.setText("<b>Curves</b> — select a run, or two to compare them.")
        elif len(shown) == 1:
            self.curves_title.setText(f"<b>Curves of {html.escape(shown[0].name)}</b> — select a second run "
                                      "(Ctrl+click) to compare.")
        else:
            extra = " (only the first two selected are drawn)" if len(chosen) > 2 else ""
            self.curves_title.setText(
                f"<b>{html.escape(shown[0].name)}</b> (blue) against <b>{html.escape(shown[1].name)}</b> "
                f"(orange){extra}. Solid: training, dashed: validation."
            )
        self._update_buttons()

    def _update_buttons(self) -> None:
        single = len(self.selected_runs()) == 1
        ready = self.state.tensorflow_ready
        self.use_button.setEnabled(single and ready)
        if not ready:
            self.use_button.setToolTip("Waiting for TensorFlow to load…")
        self.folder_button.setEnabled(bool(self.selected_runs()))
        chosen = self.selected_runs()
        can_resume = len(chosen) == 1 and chosen[0].resumable and ready and self.resume_job is None
        self.resume_button.setEnabled(can_resume)

    def use_selected(self) -> None:
        """Make the one selected run the project's last run."""
        chosen = self.selected_runs()
        if len(chosen) != 1 or not self.state.tensorflow_ready:
            return
        from tlstudio.core.train.run_result import run_result

        self.state.set_last_run(run_result(chosen[0]))

    def resume_selected(self) -> None:
        """Continue the one selected interrupted or stopped run in a worker; the list follows when it ends."""
        chosen = self.selected_runs()
        if len(chosen) != 1 or not chosen[0].resumable or self.resume_job is not None:
            return
        run = chosen[0]
        self.state.busy.emit(f"Resuming {run.name}…")
        self.resume_job = workers.run_in_thread(
            resume_run, run.path, on_event=self._on_resume_event, on_done=self.state.set_last_run,
            on_error=self.state.error.emit, name="resuming a run", kind=workers.JobKind.TRAINING,
        )
        self.resume_job.finished.connect(self._on_resume_finished)
        self.curves_title.setText(f"<b>Resuming {html.escape(run.name)}…</b>")
        self._update_buttons()

    def _on_resume_event(self, event: object) -> None:
        if isinstance(event, EpochEnded):
            self.curves_title.setText(f"<b>Resuming…</b> {html.escape(event.phase)} epoch {event.epoch} ended.")

    def _on_resume_finished(self) -> None:
        self.resume_job = None
        self.refresh()
        self._update_buttons()

    def show_selected_in_folder(self) -> None:
        chosen = self.selected_runs()
        if chosen:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(chosen[0].path)))
