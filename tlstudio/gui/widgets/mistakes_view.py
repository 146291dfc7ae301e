"""The mistakes browser: the evaluated images the model got wrong or was unsure of, worst first.

It shows an :class:`~tlstudio.core.use.evaluation.Evaluation`'s records as rows
(thumbnail and file name, true class, predicted class, probability of the
prediction, loss), chosen by the engine: :func:`~tlstudio.core.use.evaluation.mistakes`
by default, or :func:`~tlstudio.core.use.evaluation.cell_records` for one
confusion-matrix cell (:meth:`MistakesView.show_cell`, which the Evaluate page
connects to the matrix's ``cell_clicked``). Thumbnails are decoded in the
background by :class:`~tlstudio.gui.widgets.thumbnails.ThumbnailLoader`.
Double-clicking a row, or "Explain", asks for a Grad-CAM of the image;
"Show in folder" opens the folder that holds it.
"""

from __future__ import annotations

from collections import Counter

import html
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from tlstudio.core.use import evaluation as core_evaluation
from tlstudio.core.spec.text import counted
from tlstudio.gui.widgets.thumbnails import ThumbnailLoader

THUMBNAIL = 56
MAX_ROWS = 500
"""The most rows shown at once: the worst images are the ones worth looking at."""
COLUMNS = ("Image", "True class", "Predicted", "Probability", "Loss")


class MistakesView(QWidget):
    """Rows of evaluated images; ``explain_requested(path)`` when the user wants to see why."""

    explain_requested = Signal(str)
    records_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.evaluation: core_evaluation.Evaluation | None = None
        self._records: list[core_evaluation.ImageRecord] = []
        self._cell: tuple[int, int] | None = None
        self._rows_by_path: dict[str, list[int]] = {}
        self._loader = ThumbnailLoader(size=THUMBNAIL, threads=1, parent=self)
        self._loader.loaded.connect(self._on_thumbnail)

        self.title = QLabel("No evaluation yet.")
        self.title.setObjectName("mistakesTitle")
        self.title.setWordWrap(True)
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.all_button = QPushButton("Show all mistakes")
        self.all_button.setToolTip("Back to every misclassified or low-confidence image, worst first.")
        self.all_button.clicked.connect(self.show_mistakes)
        self.all_button.setVisible(False)
        self.explain_button = QPushButton("Explain")
        self.explain_button.setToolTip("Show which parts of the selected image the model looked at (Grad-CAM).")
        self.explain_button.clicked.connect(self._explain_selected)
        self.folder_button = QPushButton("Show in folder")
        self.folder_button.setToolTip("Open the folder that holds the selected image in the file manager.")
        self.folder_button.clicked.connect(self.show_selected_in_folder)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("mistakesTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(THUMBNAIL + 6)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        tips = (
            "The image and its file name; double-click to explain it.",
            "The class of the folder the image is in.",
            "The class the model chose.",
            "How sure the model was of its choice (the predicted class's probability).",
            "Cross-entropy loss, -log(probability of the true class): highest first. A confident mistake has a "
            "high loss; a mislabelled image often tops the list.",
        )
        for column, tip in enumerate(tips):
            self.table.horizontalHeaderItem(column).setToolTip(tip)
        self.table.itemDoubleClicked.connect(lambda item: self._explain_row(item.row()))
        self.table.itemSelectionChanged.connect(self._update_buttons)

        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.all_button)
        top.addWidget(self.explain_button)
        top.addWidget(self.folder_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)
        self._update_buttons()

    # ----- what is shown ------------------------------------------------------------------------------------

    @property
    def cell(self) -> tuple[int, int] | None:
        """The confusion-matrix cell (true, predicted) the rows are filtered to, or None for all mistakes."""
        return self._cell

    def records(self) -> list[core_evaluation.ImageRecord]:
        """The records shown, in row order."""
        return list(self._records)

    def set_evaluation(self, evaluation: core_evaluation.Evaluation | None) -> None:
        """Show the mistakes of a new evaluation (None: nothing)."""
        self.evaluation = evaluation
        self._loader.clear()
        self.show_mistakes()

    def show_mistakes(self) -> None:
        """The misclassified and least-confident images, highest loss first."""
        self._cell = None
        if self.evaluation is None:
            self._show([], "No evaluation yet.")
            return
        records = core_evaluation.mistakes(self.evaluation)
        wrong = sum(1 for r in records if not r.correct)
        unsure = len(records) - wrong
        if not records:
            title = (f"No mistakes: all {self.evaluation.images} images are right with a probability of at least "
                     f"{core_evaluation.UNCERTAIN_BELOW:.0%}.")
        else:
            title = (f"<b>{wrong} misclassified</b> and <b>{unsure} unsure</b> (right, but below "
                     f"{core_evaluation.UNCERTAIN_BELOW:.0%}) of {counted(self.evaluation.images, 'image')}, worst first. "
                     "Click a confusion-matrix cell to see its images.")
        self._show(records, title)

    def show_cell(self, true: int, predicted: int) -> None:
        """The images of one confusion-matrix cell: true class ``true`` predicted as ``predicted``."""
        if self.evaluation is None:
            return
        self._cell = (true, predicted)
        records = core_evaluation.cell_records(self.evaluation, true, predicted)
        classes = self.evaluation.classes
        name_true, name_predicted = html.escape(classes[true]), html.escape(classes[predicted])
        images = "image" if len(records) == 1 else "images"
        if true == predicted:
            title = f"<b>{len(records)} '{name_true}' {images} classified correctly</b>, least sure first."
        else:
            title = f"<b>{len(records)} '{name_true}' {images} predicted as '{name_predicted}'</b>, worst first."
        self._show(records, title)

    def _show(self, records: list[core_evaluation.ImageRecord], title: str) -> None:
        shown = records[:MAX_ROWS]
        if len(records) > len(shown):
            title += f" The {len(shown)} worst are listed."
        self._records = shown
        self.title.setText(title)
        self.all_button.setVisible(self._cell is not None)
        self._rows_by_path = {}
        self.table.setRowCount(0)
        self.table.setRowCount(len(shown))
        classes = self.evaluation.classes if self.evaluation is not None else ()
        names = Counter(Path(record.path).name for record in shown)
        repeated = {name for name, count in names.items() if count > 1}
        for row, record in enumerate(shown):
            path = Path(record.path)
            name = QTableWidgetItem(f"{path.parent.name}/{path.name}" if path.name in repeated else path.name)
            name.setToolTip(self._record_tip(record, classes))
            name.setData(Qt.ItemDataRole.UserRole, record.path)
            self._rows_by_path.setdefault(record.path, []).append(row)
            cells = (
                name,
                QTableWidgetItem(classes[record.true]),
                QTableWidgetItem(classes[record.predicted]),
                QTableWidgetItem(f"{record.confidence:.1%}"),
                QTableWidgetItem(f"{record.loss:.3f}"),
            )
            if not record.correct:
                cells[2].setForeground(Qt.GlobalColor.red)
            for column in (3, 4):
                cells[column].setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            for column, item in enumerate(cells):
                self.table.setItem(row, column, item)
            self._loader.request(record.path)
        if shown:
            self.table.selectRow(0)
        self._update_buttons()
        self.records_changed.emit()

    @staticmethod
    def _record_tip(record: core_evaluation.ImageRecord, classes: tuple[str, ...]) -> str:
        ranked = sorted(range(len(classes)), key=lambda i: -record.probabilities[i])[:5]
        lines = [record.path] + [f"{classes[i]}: {record.probabilities[i]:.1%}" for i in ranked]
        return "\n".join(lines)

    def _on_thumbnail(self, path: str, image: QImage) -> None:
        icon = QIcon(QPixmap.fromImage(image))
        for row in self._rows_by_path.get(path, ()):
            item = self.table.item(row, 0)
            if item is not None:
                item.setIcon(icon)

    # ----- actions ------------------------------------------------------------------------------------------

    def selected_path(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self._records[rows[0].row()].path

    def _update_buttons(self) -> None:
        has = self.selected_path() is not None
        self.explain_button.setEnabled(has)
        self.folder_button.setEnabled(has)

    def _explain_row(self, row: int) -> None:
        if 0 <= row < len(self._records):
            self.explain_requested.emit(self._records[row].path)

    def _explain_selected(self) -> None:
        path = self.selected_path()
        if path is not None:
            self.explain_requested.emit(path)

    def show_selected_in_folder(self) -> None:
        """Open the selected image's folder in the system's file manager."""
        path = self.selected_path()
        if path is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(path).parent)))

    def shutdown(self) -> None:
        """Stop decoding thumbnails (the view is going away)."""
        self._loader.shutdown()
