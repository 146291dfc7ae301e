"""The Predict page: drop images or folders and see what the model says about each.

The model is the last run by default, or a run folder or exported ``.keras``
model the user chooses. Images come from a drop anywhere on the page (file
URLs: images and folders, searched recursively), or "Add images…" / "Add
folder…". A worker loads the model once (:func:`tlstudio.core.use.predict.load_predictor`)
and classifies the files with :func:`tlstudio.core.use.predict.predict_files`;
each row shows the image and its top-k classes as bars. A file that cannot be
read gets a row saying why, and the others still get their predictions.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QIcon,
    QImage,
    QPainter,
    QPalette,
    QPixmap,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from tlstudio.core.spec.events import Progress
from tlstudio.core.spec.text import counted
from tlstudio.gui import workers
from tlstudio.gui.state import ProjectState
from tlstudio.gui.widgets.drop_zone import local_paths
from tlstudio.gui.widgets.thumbnails import ThumbnailLoader

THUMBNAIL = 64
BAR_HEIGHT = 18
BAR_COLOUR = QColor(31, 119, 180)
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.gif *.webp *.tif *.tiff);;All files (*)"
PREDICTION_ROLE = Qt.ItemDataRole.UserRole + 1


def summary_text(predictions: Sequence[Any]) -> str:
    """``"4 images classified, 2 could not be read."`` over every image shown."""
    unreadable = sum(1 for p in predictions if p.error)
    text = f"{counted(len(predictions) - unreadable, 'image')} classified"
    return text + (f", {unreadable} could not be read." if unreadable else ".")


def predict_with(source: str, predictor: Any, paths: Sequence[str], top_k: int, on_event, should_stop):
    """Load ``source`` unless ``predictor`` is already loaded, then classify ``paths`` (in a worker thread).

    Returns ``(predictor, predictions)`` so the page can keep the loaded model.
    """
    from tlstudio.core.use.predict import load_predictor, predict_files

    if predictor is None:
        predictor = load_predictor(source)
    return predictor, predict_files(predictor, paths, top_k=top_k, on_event=on_event, should_stop=should_stop)


class PredictionBars(QStyledItemDelegate):
    """Paints a :class:`~tlstudio.core.use.predict.Prediction`'s top classes as labelled bars, or its error."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        prediction = index.data(PREDICTION_ROLE)
        if prediction is None:
            super().paint(painter, option, index)
            return
        painter.save()
        palette = option.palette
        text_colour = palette.color(QPalette.ColorRole.Text)
        rect = option.rect.adjusted(6, 4, -6, -4)
        if prediction.error:
            painter.setPen(QColor("#c0392b"))
            painter.drawText(rect, Qt.AlignmentFlag.AlignVCenter | Qt.TextFlag.TextWordWrap,
                             f"Cannot read this file: {prediction.error}")
            painter.restore()
            return
        label_width = min(180, rect.width() // 3)
        bar_left = rect.left() + label_width + 6
        bar_span = max(10, rect.right() - bar_left - 56)
        top = rect.top() + max(0, (rect.height() - len(prediction.top) * (BAR_HEIGHT + 3)) // 2)
        for rank, (name, probability) in enumerate(prediction.top):
            y = top + rank * (BAR_HEIGHT + 3)
            font = painter.font()
            font.setBold(rank == 0)
            painter.setFont(font)
            painter.setPen(text_colour)
            metrics = painter.fontMetrics()
            label = metrics.elidedText(name, Qt.TextElideMode.ElideRight, label_width)
            painter.drawText(QRectF(rect.left(), y, label_width, BAR_HEIGHT),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, label)
            track = QColor(text_colour)
            track.setAlpha(25)
            painter.fillRect(QRectF(bar_left, y + 2, bar_span, BAR_HEIGHT - 4), track)
            colour = QColor(BAR_COLOUR)
            colour.setAlphaF(1.0 if rank == 0 else 0.55)
            painter.fillRect(QRectF(bar_left, y + 2, bar_span * max(0.0, min(1.0, probability)), BAR_HEIGHT - 4),
                             colour)
            painter.drawText(QRectF(bar_left + bar_span + 6, y, 50, BAR_HEIGHT),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, f"{probability:.1%}")
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index) -> QSize:  # noqa: N802 - Qt's name
        prediction = index.data(PREDICTION_ROLE)
        rows = len(prediction.top) if prediction is not None and prediction.top else 1
        return QSize(320, max(THUMBNAIL + 8, rows * (BAR_HEIGHT + 3) + 10))


class PredictPage(QWidget):
    """Classify dropped or chosen images with the last run or a chosen model."""

    predicted = Signal(list)

    def __init__(self, state: ProjectState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.source: str | None = None
        self.chosen_source = False
        self.predictor: Any = None
        self.inputs: list[str] = []
        self.predictions: list[Any] = []
        self.job: workers.WorkerHandle | None = None
        self._queued: list[str] = []
        self._generation = 0
        self._rows_by_path: dict[str, list[int]] = {}
        self._loader = ThumbnailLoader(size=THUMBNAIL, threads=1, parent=self)
        self._loader.loaded.connect(self._on_thumbnail)
        self.setAcceptDrops(True)

        self.model_label = QLabel()
        self.model_label.setObjectName("predictModel")
        self.model_label.setWordWrap(True)
        self.model_label.setTextFormat(Qt.TextFormat.RichText)
        self.model_button = QToolButton()
        self.model_button.setText("Choose model…")
        self.model_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.model_button)
        menu.addAction("Run folder…", self._choose_run)
        menu.addAction("Exported model (.keras)…", self._choose_model_file)
        self.last_run_action = menu.addAction("Use the last run", self.use_last_run)
        self.model_button.setMenu(menu)
        self.top_k_spin = QSpinBox()
        self.top_k_spin.setRange(1, 10)
        self.top_k_spin.setValue(3)
        self.top_k_spin.setPrefix("top-")
        self.top_k_spin.setToolTip("How many of the most probable classes to show for each image.")
        self.top_k_spin.valueChanged.connect(lambda _v: self.predict_all())
        self.add_button = QPushButton("Add images…")
        self.add_button.clicked.connect(self._choose_images)
        self.folder_button = QPushButton("Add folder…")
        self.folder_button.clicked.connect(self._choose_folder)
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.clear)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(200)
        self.progress.setVisible(False)
        self.hint = QLabel("Drop images or folders anywhere on this page, or use <b>Add images…</b>. "
                           "Folders are searched for images, sub-folders included.")
        self.hint.setObjectName("predictHint")
        self.hint.setWordWrap(True)

        self.table = QTableWidget(0, 2)
        self.table.setObjectName("predictions")
        self.table.setHorizontalHeaderLabels(["Image", "Top predictions"])
        self.table.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setItemDelegateForColumn(1, PredictionBars(self.table))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setColumnWidth(0, 300)

        top = QHBoxLayout()
        top.addWidget(self.model_label, 1)
        top.addWidget(self.model_button)
        top.addWidget(self.top_k_spin)
        actions = QHBoxLayout()
        actions.addWidget(self.hint, 1)
        actions.addWidget(self.progress)
        actions.addWidget(self.add_button)
        actions.addWidget(self.folder_button)
        actions.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(top)
        layout.addLayout(actions)
        layout.addWidget(self.table, 1)

        state.run_finished.connect(self._on_run_finished)
        self._on_run_finished(state.last_run)

    # ----- model --------------------------------------------------------------------------------------------

    def _on_run_finished(self, result) -> None:
        run_dir = getattr(result, "run_dir", None) if result is not None else None
        if run_dir is not None and not self.chosen_source:
            self.set_source(run_dir, chosen=False)
        self._show_source()

    def set_source(self, source: str | Path, chosen: bool = True) -> None:
        """Predict with this run folder, export folder or ``.keras`` file from now on."""
        self.source = str(source)
        self.chosen_source = chosen
        self.predictor = None
        self._forget_job()
        self._show_source()
        self.predict_all()

    def use_last_run(self) -> None:
        last = self.state.last_run
        self.chosen_source = False
        if last is not None:
            self.set_source(last.run_dir, chosen=False)

    def _show_source(self) -> None:
        self.last_run_action.setEnabled(self.state.last_run is not None)
        if self.source is None:
            self.model_label.setText("No model yet: train one, or choose a run folder or an exported model.")
            return
        path = Path(self.source)
        what = "the last run" if not self.chosen_source else ("run" if path.is_dir() else "model")
        self.model_label.setText(
            f"Model: {what} <b>{html.escape(path.name)}</b> <span style='color:gray'>{html.escape(str(path))}</span>"
        )

    def _choose_run(self) -> None:
        from tlstudio.core.spec.paths import runs_dir

        folder = QFileDialog.getExistingDirectory(self, "Choose a run folder", str(runs_dir()))
        if folder:
            self.set_source(folder)

    def _choose_model_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose an exported model", "", "Keras models (*.keras);;All files (*)"
        )
        if path:
            self.set_source(path)

    # ----- images -------------------------------------------------------------------------------------------

    def _choose_images(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Choose images to classify", "", IMAGE_FILTER)
        if paths:
            self.add_paths(paths)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder of images")
        if folder:
            self.add_paths([folder])

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt's name
        if local_paths(event.mimeData())[0]:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802 - Qt's name
        self.dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt's name
        paths, _others = local_paths(event.mimeData())
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.add_paths([str(p) for p in paths])

    def add_paths(self, paths: Sequence[str | Path]) -> None:
        """Classify these files and folders and add their rows."""
        new = [str(p) for p in paths if str(p) not in self.inputs]
        self.inputs.extend(new)
        if new:
            self._predict(new)

    def _forget_job(self) -> None:
        """Stop the running prediction and ignore whatever it still sends."""
        self._generation += 1
        if self.job is not None:
            self.job.stop()
            self.job = None
            self.progress.setVisible(False)
            self.state.busy.emit("")

    def clear(self) -> None:
        self._forget_job()
        self.inputs = []
        self.predictions = []
        self._queued = []
        self._loader.clear()
        self._rows_by_path = {}
        self.table.setRowCount(0)

    def predict_all(self) -> None:
        """Classify every added image again (new model or top-k)."""
        if not self.inputs:
            return
        self._forget_job()
        self._queued = []
        self.predictions = []
        self._rows_by_path = {}
        self.table.setRowCount(0)
        self._predict(list(self.inputs))

    # ----- work ---------------------------------------------------------------------------------------------

    def _predict(self, paths: list[str]) -> None:
        if self.source is None:
            self.hint.setText("Images added. Train a model or choose one (top right) to see predictions.")
            return
        if self.job is not None:
            self._queued.extend(p for p in paths if p not in self._queued)
            return
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.state.busy.emit("Predicting…")
        job = workers.run_in_thread(
            predict_with, self.source, self.predictor, paths, self.top_k_spin.value(),
            on_event=self._on_event, on_done=lambda result, g=self._generation: self._on_done(result, g),
            on_error=lambda error, g=self._generation: self._on_error(error, g), name="prediction",
            kind=workers.JobKind.PREDICTION,
        )
        job.finished.connect(lambda j=job: self._on_finished(j))
        self.job = job

    def _on_event(self, event: object) -> None:
        if isinstance(event, Progress) and event.total:
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)

    def _on_done(self, result: tuple[Any, list], generation: int) -> None:
        if generation != self._generation:
            return
        predictor, predictions = result
        self.predictor = predictor
        self._add_rows(predictions)
        self.hint.setText(summary_text(self.predictions) + " Drop more to add them.")
        self.predicted.emit(predictions)

    def _on_error(self, error: BaseException, generation: int) -> None:
        if generation != self._generation:
            return
        self.predictor = None
        self.state.error.emit(error)

    def _on_finished(self, job: workers.WorkerHandle) -> None:
        if self.job is not job:
            return
        self.job = None
        self.progress.setVisible(False)
        self.state.busy.emit("")
        if self._queued:
            queued, self._queued = self._queued, []
            self._predict(queued)

    def _add_rows(self, predictions: list) -> None:
        start = self.table.rowCount()
        self.table.setRowCount(start + len(predictions))
        for offset, prediction in enumerate(predictions):
            row = start + offset
            path = Path(prediction.path)
            name = QTableWidgetItem(path.name)
            name.setToolTip(prediction.path)
            bars = QTableWidgetItem()
            bars.setData(PREDICTION_ROLE, prediction)
            bars.setToolTip("\n".join(f"{c}: {p:.2%}" for c, p in prediction.top) or prediction.error)
            self.table.setItem(row, 0, name)
            self.table.setItem(row, 1, bars)
            if not prediction.error:
                self._rows_by_path.setdefault(prediction.path, []).append(row)
                self._loader.request(prediction.path)
        self.predictions.extend(predictions)
        self.table.resizeRowsToContents()

    def _on_thumbnail(self, path: str, image: QImage) -> None:
        icon = QIcon(QPixmap.fromImage(image))
        for row in self._rows_by_path.get(path, ()):
            item = self.table.item(row, 0)
            if item is not None:
                item.setIcon(icon)

    def row_count(self) -> int:
        return self.table.rowCount()
