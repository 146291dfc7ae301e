"""The Data page's *Health* and *Map* tabs.

*Health* runs :func:`tlstudio.core.use.health.check_dataset` in a worker
(progress and Stop) and lists likely mislabelled images, near-duplicates and
outliers with thumbnails. *Exclude* and *Relabel as…* change the project (its
data section's ``excluded_files`` and ``relabels``, honoured by the scan and by
training); *Keep* only hides a finding. The user's files are touched only by
the explicit *Apply to folders…*, which moves them with an undo log.

*Map* draws the 2-D projection of the cut features
(:mod:`tlstudio.core.use.feature_map`) in pyqtgraph: pan and zoom with the
mouse, hover for the file name, click to show that image in the Health tab.
"""

from __future__ import annotations

import html
import os
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import QColor, QIcon
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from tlstudio.core.spec.events import Progress
from tlstudio.core.spec.text import counted
from tlstudio.gui import workers
from tlstudio.gui.state import ProjectState

PATH_ROLE = Qt.ItemDataRole.UserRole
KINDS = {"mislabeled": "Likely mislabelled", "duplicate": "Near-duplicate", "outlier": "Outlier"}


def add_health_tabs(
    tabs: QTabWidget, state: ProjectState, rescan: Any = None
) -> tuple["HealthPanel", "MapPanel"]:
    """Add the Health and Map tabs to ``tabs``, wired together (a map click shows the image in Health);
    ``rescan()`` runs after files were moved back."""
    panel = HealthPanel(state)
    if rescan is not None:
        panel.files_moved.connect(rescan)
    chart = MapPanel(state)
    tabs.addTab(panel, "Health")
    tabs.addTab(chart, "Map")
    panel.checked.connect(chart.set_report)

    def show(path: str) -> None:
        tabs.setCurrentWidget(panel)
        panel.select_path(path)

    chart.image_chosen.connect(show)
    return panel, chart


def open_dialog(dialog: Any) -> Any:
    """Show a non-modal dialog that deletes itself on close (the page stays usable while it works)."""
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.show()
    return dialog


def _inputs(state: ProjectState) -> tuple[Any, Any, int, str]:
    """Base model, dataset, input size and preprocessing mode for work on the project's features."""
    from tlstudio.core.model.backbones import preprocessing_mode

    base = state.base_model
    size = int(base.inputs[0].shape[1] or state.recipe.base.input_size)
    return base, state.dataset, size, preprocessing_mode(state.recipe.base)


def _missing(state: ProjectState) -> str:
    if state.base_model is None:
        return "Load a base model on the Model page first."
    if state.dataset is None or len(state.dataset.classes) < 2:
        return "Add images of at least 2 classes first."
    return ""


class _Job(QWidget):
    """A run button, a Stop button, a progress bar and a status line around one worker."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.job: workers.WorkerHandle | None = None
        self.run_button = QPushButton(title)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setVisible(False)
        self.stop_button.clicked.connect(self.stop)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel()
        self.status.setWordWrap(True)

    def controls(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(self.run_button)
        row.addWidget(self.stop_button)
        row.addWidget(self.progress, 1)
        return row

    def start(self, fn: Any, *args: Any, on_done: Any) -> None:
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.stop_button.setVisible(True)
        self.run_button.setEnabled(False)
        self.job = workers.run_in_thread(
            fn, *args, on_event=self._event, on_done=on_done, on_error=self._failed,
            on_cancel=lambda: self.status.setText("Stopped."), name=self.run_button.text(),
        )
        self.job.finished.connect(self._ended)

    def stop(self) -> None:
        if self.job is not None:
            self.job.stop()

    def _event(self, event: object) -> None:
        if isinstance(event, Progress):
            if event.total:
                self.progress.setRange(0, event.total)
                self.progress.setValue(event.done)
            self.status.setText(event.message)

    def _failed(self, error: BaseException) -> None:
        self.status.setText(str(error))

    def _ended(self) -> None:
        self.job = None
        self.progress.setVisible(False)
        self.stop_button.setVisible(False)
        self.run_button.setEnabled(True)


class HealthPanel(_Job):
    """Findings of the health check with actions that change the project. ``checked(HealthReport)``."""

    checked = Signal(object)
    files_moved = Signal()

    def __init__(self, state: ProjectState, parent: QWidget | None = None) -> None:
        super().__init__("Check data", parent)
        self.state = state
        self.report: Any = None
        self.run_button.setToolTip("Find likely mislabelled images, near-duplicates and outliers on the cut "
                                   "features (k-fold linear classifiers and confident learning).")
        self.run_button.clicked.connect(self.check)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Finding", "Image", "Given", "Suggested", "Score"])
        self.tree.setRootIsDecorated(False)
        self.tree.setIconSize(QSize(48, 48))
        self.tree.itemSelectionChanged.connect(self._update_actions)
        self.exclude_button = QPushButton("Exclude")
        self.exclude_button.setToolTip("Leave this image out of training (stored in the project; the file stays)")
        self.exclude_button.clicked.connect(self.exclude_selected)
        self.relabel_combo = QComboBox()
        self.relabel_button = QPushButton("Relabel as")
        self.relabel_button.setToolTip("Train with this image in another class (stored in the project; the file "
                                       "stays where it is)")
        self.relabel_button.clicked.connect(lambda: self.relabel_selected(self.relabel_combo.currentText()))
        self.keep_button = QPushButton("Keep")
        self.keep_button.setToolTip("The image is fine: hide this finding")
        self.keep_button.clicked.connect(self.keep_selected)
        self.apply_button = QPushButton("Apply to folders…")
        self.apply_button.setToolTip("Move the project's excluded and relabelled images on disk (excluded ones into "
                                     "a folder you choose), with an undo log")
        self.apply_button.clicked.connect(self.apply_to_folders)
        self.undo_button = QPushButton("Undo moves")
        self.undo_button.setEnabled(False)
        self.undo_button.clicked.connect(self.undo_moves)
        self.undo_log: Any = None
        actions = QHBoxLayout()
        for widget in (self.exclude_button, self.relabel_button, self.relabel_combo, self.keep_button):
            actions.addWidget(widget)
        actions.addStretch(1)
        actions.addWidget(self.apply_button)
        actions.addWidget(self.undo_button)
        layout = QVBoxLayout(self)
        layout.addLayout(self.controls())
        layout.addWidget(self.status)
        layout.addWidget(self.tree, 1)
        layout.addLayout(actions)
        state.dataset_changed.connect(lambda _d: self._update_actions())
        state.base_model_changed.connect(lambda _m: self._update_actions())
        self._update_actions()

    def check(self) -> None:
        """Start the check (needs a base model and a scanned dataset)."""
        missing = _missing(self.state)
        if missing:
            self.status.setText(missing)
            return
        from tlstudio.core.use.health import check_dataset

        base, dataset, size, mode = _inputs(self.state)
        self.status.setText("Checking…")
        self.start(check_dataset, base, dataset, self.state.recipe.cut_tensor, size, mode, on_done=self.show_report)

    def show_report(self, report: Any) -> None:
        """List ``report``'s findings, best first in each kind."""
        self.report = report
        self.tree.clear()
        for m in report.mislabeled:
            self._add("mislabeled", m.path, m.given, m.suggested, m.score)
        for d in report.near_duplicates:
            note = ", ".join(n for f, n in ((d.across_splits, "across splits"), (d.across_classes, "other class")) if f)
            item = self._add("duplicate", d.paths[0], note, os.path.basename(d.paths[1]), d.similarity)
            item.setIcon(3, QIcon(d.paths[1]))
            item.setToolTip(1, "\n".join(d.paths))
        for o in report.outliers:
            self._add("outlier", o.path, "", "", o.score)
        self.relabel_combo.clear()
        self.relabel_combo.addItems(list(report.classes))
        self.status.setText(f"{len(report.mislabeled)} likely mislabelled, "
                            f"{counted(len(report.near_duplicates), 'near-duplicate pair')}, "
                            f"{counted(len(report.outliers), 'outlier')}.")
        self._update_actions()
        self.checked.emit(report)

    def _add(self, kind: str, path: str, given: str, suggested: str, score: float) -> QTreeWidgetItem:
        item = QTreeWidgetItem([KINDS[kind], os.path.basename(path), given, suggested, f"{score:.3f}"])
        item.setData(0, PATH_ROLE, path)
        item.setData(0, Qt.ItemDataRole.UserRole + 1, kind)
        item.setIcon(1, QIcon(path))
        item.setToolTip(1, path)
        self.tree.addTopLevelItem(item)
        return item

    def select_path(self, path: str) -> None:
        """Select the first finding about ``path`` (if any)."""
        for row in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(row)
            if item.data(0, PATH_ROLE) == path:
                self.tree.setCurrentItem(item)
                return
        self.status.setText(f"No finding about {os.path.basename(path)}.")

    def selected_paths(self) -> list[str]:
        return [item.data(0, PATH_ROLE) for item in self.tree.selectedItems()]

    def exclude_selected(self) -> None:
        """Add the selected images to the project's excluded files."""
        paths = self.selected_paths()
        if paths:
            data = self.state.recipe.data
            self.state.update("data", excluded_files=(*data.excluded_files, *paths))
            self._remove_selected()

    def relabel_selected(self, class_name: str) -> None:
        """Give the selected images ``class_name`` in the project."""
        paths = self.selected_paths()
        if paths and class_name:
            data = self.state.recipe.data
            self.state.update("data", relabels=(*data.relabels, *((p, class_name) for p in paths)))
            self._remove_selected()

    def keep_selected(self) -> None:
        self._remove_selected()

    def _remove_selected(self) -> None:
        for item in self.tree.selectedItems():
            self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(item))

    def apply_to_folders(self, folder: str | None = None) -> None:
        """Move the files of the project's corrections (asks for the excluded images' folder and confirms)."""
        from tlstudio.core.data.dataset import scan_dataset
        from tlstudio.core.spec.errors import UserError
        from tlstudio.core.use.folder_moves import apply_to_folders

        data = self.state.recipe.data
        if not data.excluded_files and not data.relabels:
            self.status.setText("The project has no excluded or relabelled images to apply.")
            return
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Folder for the excluded images (outside your data)")
            if not folder:
                return
            answer = QMessageBox.question(
                self, "Move files?",
                f"Move {len(data.relabels)} relabelled images into their new class folders and "
                f"{len(data.excluded_files)} excluded images into {folder}? An undo log is kept there.")
            if answer != QMessageBox.StandardButton.Yes:
                return
        try:
            before = scan_dataset(data.folders, data.val_fraction, data.seed, data.excluded_classes)
            remaining, self.undo_log = apply_to_folders(before, data, folder)
        except (UserError, OSError) as error:
            self.status.setText(str(error))
            return
        self.state.update(data=remaining)
        self.undo_button.setEnabled(True)
        self.status.setText(f"Files moved; the undo log is {self.undo_log}.")

    def undo_moves(self) -> None:
        """Move the files of the last apply back (the project's corrections are not restored)."""
        from tlstudio.core.spec.errors import UserError
        from tlstudio.core.use.folder_moves import undo_moves

        if self.undo_log is None:
            return
        try:
            count = undo_moves(self.undo_log)
        except (UserError, OSError) as error:
            self.status.setText(str(error))
            return
        self.undo_button.setEnabled(False)
        self.status.setText(f"{counted(count, 'file')} moved back.")
        self.files_moved.emit()

    def _update_actions(self) -> None:
        selected = bool(self.tree.selectedItems())
        for widget in (self.exclude_button, self.relabel_button, self.relabel_combo, self.keep_button):
            widget.setEnabled(selected)
        items = self.tree.selectedItems()
        if items and items[0].data(0, Qt.ItemDataRole.UserRole + 1) == "mislabeled":
            self.relabel_combo.setCurrentText(items[0].text(3))
        missing = _missing(self.state)
        self.run_button.setToolTip(missing or self.run_button.toolTip())
        if missing and self.job is None and self.report is None:
            self.status.setText(missing)


class MapPanel(_Job):
    """The feature map in pyqtgraph. ``image_chosen(path)`` when a point is clicked."""

    image_chosen = Signal(str)

    def __init__(self, state: ProjectState, parent: QWidget | None = None) -> None:
        super().__init__("Draw map", parent)
        self.state = state
        self.map: Any = None
        self.flags: dict[str, str] = {}
        self.mistakes: dict[str, str] = {}
        state.evaluated.connect(self.set_evaluation)
        self.run_button.setToolTip("Project the cut features to 2-D (PCA, then t-SNE): similar images land close.")
        self.run_button.clicked.connect(self.draw)
        self.plot = pg.PlotWidget()
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.scatter = pg.ScatterPlotItem(size=11, hoverable=True, tip=_tip)
        self.scatter.sigClicked.connect(lambda _item, points, _ev: points and self.image_chosen.emit(points[0].data()))
        self.plot.addItem(self.scatter)
        layout = QVBoxLayout(self)
        layout.addLayout(self.controls())
        layout.addWidget(self.status)
        layout.addWidget(self.plot, 1)

    def draw(self) -> None:
        missing = _missing(self.state)
        if missing:
            self.status.setText(missing)
            return
        base, dataset, size, mode = _inputs(self.state)
        self.status.setText("Projecting…")
        self.start(_map_of, base, dataset, self.state.recipe.cut_tensor, size, mode, on_done=self.show_map)

    def set_report(self, report: Any) -> None:
        """Ring the health findings of ``report`` on the map."""
        from tlstudio.core.use.feature_map import health_flags

        self.flags = health_flags(report)
        if self.map is not None:
            self.show_map(self.map)

    def set_evaluation(self, evaluation: Any) -> None:
        """Ring the images ``evaluation`` got wrong (a health finding on the same image is ringed instead)."""
        from tlstudio.core.use.feature_map import mistake_flags

        self.mistakes = mistake_flags(evaluation)
        if self.map is not None:
            self.show_map(self.map)

    def show_map(self, fmap: Any) -> None:
        from tlstudio.core.use.feature_map import FLAG_COLOURS, PALETTE

        self.map = fmap
        spots = []
        flags = {**self.mistakes, **self.flags}
        for (x, y), path, label in zip(fmap.points, fmap.paths, fmap.labels):
            flag = flags.get(path)
            spots.append({
                "pos": (float(x), float(y)), "data": path,
                "brush": pg.mkBrush(QColor(*PALETTE[label % len(PALETTE)])),
                "pen": pg.mkPen(QColor(*FLAG_COLOURS[flag]), width=3) if flag else pg.mkPen(None),
            })
        self.scatter.setData(spots)
        self.status.setText(
            f"{counted(len(fmap.paths), 'image')}; colours are classes. Rings: red likely mislabelled, orange "
            "outlier, purple near-duplicate (Health), black wrong in the last evaluation. Hover for the file, "
            "click to see it in Health."
        )


def _tip(x: float, y: float, data: str) -> str:
    """A point's hover text: the image itself and its file name."""
    name = html.escape(os.path.basename(data))
    return f'<img src="{html.escape(bytes(QUrl.fromLocalFile(data).toEncoded()).decode())}" width="128"><br>{name}'


def _map_of(base: Any, dataset: Any, cut: str | None, size: int, mode: str, on_event: Any, should_stop: Any) -> Any:
    from tlstudio.core.use import feature_map, health

    items, splits = health.dataset_items(dataset)
    _, features = health.cut_features(base, items, cut, size, mode, on_event, should_stop)
    return feature_map.build_map(features, items, splits, dataset.classes, on_event=on_event)
