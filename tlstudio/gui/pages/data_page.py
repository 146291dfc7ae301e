"""The Data page: drop image folders, see the classes, the images, the problems and the split.

Folders come from the drop zone or "Add folder…" and are scanned by
:func:`tlstudio.core.data.dataset.scan_dataset` in a worker thread, with a progress
bar. The recipe's data section changes only when a scan finds usable images, so
dropping the wrong thing (a file, an empty folder, a folder of non-images) says
what was wrong and keeps what was there. Any later change of the data section
(split settings, excluded classes, an opened project) triggers a fresh scan.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import QModelIndex, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from tlstudio.core.data.balance import imbalance_warning
from tlstudio.core.data.dataset import Dataset, scan_data_spec
from tlstudio.core.spec.events import Message, Progress
from tlstudio.core.spec.recipe import DataSpec
from tlstudio.core.spec.text import counted
from tlstudio.gui.errors import show_error
from tlstudio.gui.health_panel import add_health_tabs
from tlstudio.gui.state import ProjectState
from tlstudio.gui.widgets.drop_zone import DropZone
from tlstudio.gui.widgets.thumbnails import PATH_ROLE, ThumbnailGrid
from tlstudio.gui.widgets.verify_bar import VerifyBar
from tlstudio.gui.workers import JobKind, WorkerHandle, run_in_thread

VAL_TIP = (
    "The share of each class held out for validation: images the model never trains on, used to measure "
    "honestly how well it does. 20 % suits most datasets; with very few images, 10–15 %."
)
SEED_TIP = (
    "The split is random but reproducible: the same seed always puts the same images in validation. "
    "Change it to check that results do not depend on one lucky split."
)
SPLIT_GIVEN_TIP = "Your folders already have train/ and val/ (and test/): that split is used as it is."
LAYOUT_NAMES = {
    "class-folders": "one folder with a sub-folder per class",
    "split-folders": "a folder with train/ and val/",
    "split-folders-test": "a folder with train/, val/ and test/",
    "folder-per-class": "one folder per class",
}


def reveal_in_file_manager(path: str) -> bool:
    """Open the folder holding ``path`` in the system's file manager."""
    target = Path(path)
    folder = target if target.is_dir() else target.parent
    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))


class DataPage(QWidget):
    """Where images come in. ``scan_finished(Dataset | None)`` follows every scan (None: it failed)."""

    scan_finished = Signal(object)

    def __init__(self, state: ProjectState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._scanned: DataSpec | None = None
        self._handle: WorkerHandle | None = None
        self._handle_spec: DataSpec | None = None
        self._queued: DataSpec | None = None
        self._known_counts: dict[str, int] = {}
        self._rescan_timer = QTimer(self, singleShot=True, interval=250)
        self._rescan_timer.timeout.connect(self._rescan_if_changed)
        self._build()
        state.data_changed.connect(self._on_data_changed)
        state.dataset_changed.connect(self._show_dataset)
        self._on_data_changed(state.recipe.data)
        self._show_dataset(state.dataset)

    # ----- building -----

    def _build(self) -> None:
        title = QLabel("Data")
        title.setObjectName("pageTitle")
        hint = QLabel("Your images, one folder per class. TL Studio reads them where they are; nothing is copied.")
        hint.setWordWrap(True)

        self.drop_zone = DropZone()
        self.drop_zone.folders_dropped.connect(lambda folders, add: self.set_folders(folders, add=add))
        self.drop_zone.rejected.connect(self.show_message)

        self.add_button = QPushButton("Add folder…")
        self.add_button.setToolTip("Choose a folder of images. With one folder per class already listed, it is "
                                   "added as one more class; otherwise it replaces the current folders.")
        self.add_button.clicked.connect(self.choose_folder)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Remove the selected folders from the project")
        self.remove_button.clicked.connect(self.remove_selected_folders)
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Remove every folder and start over")
        self.clear_button.clicked.connect(lambda: self.state.update("data", folders=(), excluded_classes=()))

        self.val_spin = QSpinBox()
        self.val_spin.setRange(5, 50)
        self.val_spin.setSingleStep(5)
        self.val_spin.setSuffix(" %")
        self.val_spin.setToolTip(VAL_TIP)
        self.val_spin.valueChanged.connect(lambda v: self._update_split(val_fraction=v / 100))
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2_147_483_647)
        self.seed_spin.setToolTip(SEED_TIP)
        self.seed_spin.valueChanged.connect(lambda v: self._update_split(seed=v))
        split_box = QGroupBox("Validation split")
        split_box.setWhatsThis(self.val_spin.toolTip())
        form = QFormLayout(split_box)
        form.addRow("Held out:", self.val_spin)
        form.addRow("Seed:", self.seed_spin)

        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addWidget(self.clear_button)
        self.folder_list = QListWidget()
        self.folder_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.folder_list.setToolTip("The folders this project reads images from")
        self.folder_list.setMaximumHeight(72)
        side = QVBoxLayout()
        side.addLayout(buttons)
        side.addWidget(self.folder_list)
        side.addWidget(split_box)
        top = QHBoxLayout()
        top.addWidget(self.drop_zone, 3)
        top.addLayout(side, 2)

        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.progress.setFormat("Scanning… %v files")
        self.message_label = self._banner("errorBanner")
        self.warnings_label = self._banner("warningBanner")
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)

        self.class_table = QTableWidget(0, 5)
        self.class_table.setHorizontalHeaderLabels(["Use", "Class", "Train", "Val", "Test"])
        self.class_table.horizontalHeaderItem(0).setToolTip(
            "Untick a class to leave it out of training (its folder stays as it is)")
        self.class_table.verticalHeader().setVisible(False)
        self.class_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.class_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.class_table.horizontalHeader()
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for column in (0, 2, 3):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.class_table.itemChanged.connect(self._on_class_item_changed)
        self.class_table.itemSelectionChanged.connect(self._filter_from_table)
        self.class_table.setToolTip("Classes are the sub-folder names. Untick one to exclude it.")

        self.class_filter = QComboBox()
        self.class_filter.setToolTip("Show the images of one class")
        self.class_filter.currentIndexChanged.connect(self._update_thumbnails)
        self.thumbnails = ThumbnailGrid()
        self.thumbnails.doubleClicked.connect(
            lambda index: reveal_in_file_manager(index.data(PATH_ROLE)))
        images_tab = QWidget()
        images_layout = QVBoxLayout(images_tab)
        images_layout.setContentsMargins(4, 4, 4, 4)
        filter_row = QHBoxLayout()
        filter_row.addWidget(QLabel("Show:"))
        filter_row.addWidget(self.class_filter, 1)
        images_layout.addLayout(filter_row)
        images_layout.addWidget(self.thumbnails)

        self.problems_table = QTreeWidget()
        self.problems_table.setColumnCount(2)
        self.problems_table.setHeaderLabels(["File", "Why it was skipped"])
        self.problems_table.setRootIsDecorated(False)
        self.problems_table.setToolTip("Files that are not used, with the reason. Double-click to show the file "
                                       "in your file manager.")
        self.problems_table.itemDoubleClicked.connect(
            lambda item, _col: item.toolTip(0) and reveal_in_file_manager(item.toolTip(0)))
        self.duplicates_tree = QTreeWidget()
        self.duplicates_tree.setHeaderLabels(["Byte-identical files"])
        self.duplicates_tree.setToolTip("Copies of the same file. Each group is kept on one side of the split, so "
                                        "validation never sees a copy of a training image.")
        self.duplicates_tree.itemDoubleClicked.connect(
            lambda item, _col: item.toolTip(0) and reveal_in_file_manager(item.toolTip(0)))
        self.tabs = QTabWidget()
        self.tabs.addTab(images_tab, "Images")
        self.tabs.addTab(self.problems_table, "Problems")
        self.tabs.addTab(self.duplicates_tree, "Duplicates")
        self.health_panel, self.map_panel = add_health_tabs(self.tabs, self.state, self.rescan)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.class_table)
        splitter.addWidget(self.tabs)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([300, 900])

        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(hint)
        layout.addLayout(top)
        layout.addWidget(self.progress)
        layout.addWidget(self.message_label)
        layout.addWidget(self.warnings_label)
        layout.addWidget(self.summary_label)
        self.verify_bar = VerifyBar()
        self.verify_bar.verified.connect(self._use_verified)
        layout.addWidget(self.verify_bar)
        layout.addWidget(splitter, 1)

    @staticmethod
    def _banner(name: str) -> QLabel:
        label = QLabel()
        label.setObjectName(name)
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        label.setVisible(False)
        return label

    # ----- folders -----

    def choose_folder(self) -> None:
        start = self.state.recipe.data.folders[-1] if self.state.recipe.data.folders else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of images", start)
        if folder:
            self.set_folders([folder], add=self._adds_to_current())

    def _adds_to_current(self) -> bool:
        dataset = self.state.dataset
        return bool(self.state.recipe.data.folders) and dataset is not None and dataset.layout == "folder-per-class"

    def set_folders(self, folders: list[str], add: bool = False) -> None:
        """Scan ``folders`` (added to the current ones with ``add``); the recipe follows if it finds images."""
        current = list(self.state.recipe.data.folders) if add else []
        merged = current + [f for f in folders if f not in current]
        spec = dataclasses.replace(self.state.recipe.data, folders=tuple(merged),
                                   excluded_classes=self.state.recipe.data.excluded_classes if add else ())
        self.show_message("")
        self._start_scan(spec)

    def remove_selected_folders(self) -> None:
        selected = {item.text() for item in self.folder_list.selectedItems()}
        if selected:
            remaining = tuple(f for f in self.state.recipe.data.folders if f not in selected)
            self.state.update("data", folders=remaining)

    def show_message(self, text: str) -> None:
        """Say what went wrong with the last drop or scan (empty text hides it)."""
        self.message_label.setText(text)
        self.message_label.setVisible(bool(text))

    def _update_split(self, **changes) -> None:
        if any(getattr(self.state.recipe.data, k) != v for k, v in changes.items()):
            self.state.update("data", **changes)

    # ----- scanning -----

    def rescan(self) -> None:
        """Scan the recipe's folders again (files may have changed on disk)."""
        if self.state.recipe.data.folders:
            self._start_scan(self.state.recipe.data)

    def is_scanning(self) -> bool:
        return self._handle is not None

    def _rescan_if_changed(self) -> None:
        data = self.state.recipe.data
        if not data.folders:
            self._scanned = data
            if self.state.dataset is not None:
                self.state.set_dataset(None)
            return
        if data != self._scanned and (self._handle is None or self._handle_spec != data):
            self._start_scan(data)

    def _start_scan(self, spec: DataSpec) -> None:
        if self._handle is not None:
            self._queued = spec
            self._handle.stop()
            return
        self._handle_spec = spec
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.state.busy.emit("Scanning images…")
        self._handle = run_in_thread(
            scan_data_spec,
            spec,
            on_event=self._on_event,
            on_done=self._scan_done,
            on_error=self._scan_failed,
            name="scan", kind=JobKind.SCAN,
        )
        self._handle.finished.connect(self._scan_ended)

    def _on_event(self, event: object) -> None:
        if isinstance(event, Progress) and event.task == "scan":
            if event.total:
                self.progress.setRange(0, event.total)
                self.progress.setFormat(event.message or "%v / %m")
            else:
                self.progress.setRange(0, 0)
            self.progress.setValue(event.done)
            self.state.busy.emit(f"Scanning images… {event.message}".rstrip(". "))
        elif isinstance(event, Message) and event.level == "warning":
            self.show_message(event.text)

    def _scan_done(self, dataset: Dataset) -> None:
        spec = self._handle_spec
        if self._queued is not None or spec is None:
            return
        if not dataset.classes and not dataset.excluded_classes and spec.folders != self.state.recipe.data.folders:
            self.show_message(no_images_message(spec.folders, dataset))
            self.scan_finished.emit(None)
            return
        self._scanned = spec
        for name, count in dataset.counts.items():
            self._known_counts[name] = count
        if spec != self.state.recipe.data:
            self.state.update(data=spec)
        if not dataset.classes and not dataset.excluded_classes:
            self.show_message(no_images_message(spec.folders, dataset))
        self.state.set_dataset(dataset)
        self.scan_finished.emit(dataset)

    def _scan_failed(self, error: BaseException) -> None:
        if self._queued is None:
            show_error(self, error)
            self.scan_finished.emit(None)

    def _scan_ended(self) -> None:
        self._handle = None
        queued, self._queued = self._queued, None
        if queued is not None:
            self._start_scan(queued)
            return
        self.progress.setVisible(False)
        self.state.busy.emit("")

    # ----- following the state -----

    def _on_data_changed(self, data: DataSpec) -> None:
        for spin, value in ((self.val_spin, round(data.val_fraction * 100)), (self.seed_spin, data.seed)):
            spin.blockSignals(True)
            spin.setValue(value)
            spin.blockSignals(False)
        self.folder_list.clear()
        self.folder_list.addItems(list(data.folders))
        self.folder_list.setVisible(bool(data.folders))
        self.remove_button.setEnabled(bool(data.folders))
        self.clear_button.setEnabled(bool(data.folders))
        if data != self._scanned:
            self._rescan_timer.start()

    def _show_dataset(self, dataset: Dataset | None) -> None:
        self._fill_classes(dataset)
        self._fill_problems(dataset)
        self._fill_duplicates(dataset)
        self._fill_filter(dataset)
        self._update_thumbnails()
        self._update_summary(dataset)
        self.verify_bar.offer(dataset)

    def _use_verified(self, report) -> None:
        """Put the images that did not decode into the Problems list and say how many there were."""
        self.state.set_dataset(report.dataset)
        self.show_message(report.summary())

    def _fill_classes(self, dataset: Dataset | None) -> None:
        table = self.class_table
        table.blockSignals(True)
        table.setRowCount(0)
        if dataset is not None:
            per_split = dataset.split_counts()
            names = sorted({*dataset.classes, *dataset.excluded_classes, *dataset.empty_classes})
            table.setRowCount(len(names))
            for row, name in enumerate(names):
                excluded = name in dataset.excluded_classes
                use = QTableWidgetItem()
                use.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                use.setCheckState(Qt.CheckState.Unchecked if excluded else Qt.CheckState.Checked)
                use.setData(Qt.ItemDataRole.UserRole, name)
                use.setToolTip(f"Untick to leave {name!r} out of training" if not excluded
                               else f"{name!r} is excluded; tick to use it again")
                table.setItem(row, 0, use)
                label = QTableWidgetItem(name)
                if excluded:
                    known = self._known_counts.get(name)
                    counts = ("excluded", "" if known is None else f"({known})", "")
                elif name in dataset.empty_classes:
                    counts = ("0", "0", "0")
                    label.setToolTip("No usable images in this class folder")
                else:
                    counts = tuple(str(per_split[split].get(name, 0)) for split in ("train", "val", "test"))
                folders = dataset.class_folders.get(name, ())
                label.setToolTip("\n".join(folders) or name)
                table.setItem(row, 1, label)
                for column, text in enumerate(counts, start=2):
                    item = QTableWidgetItem(text)
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    table.setItem(row, column, item)
                if excluded or name in dataset.empty_classes:
                    for column in range(1, 5):
                        table.item(row, column).setForeground(self.palette().placeholderText())
        table.setColumnHidden(4, dataset is None or not dataset.test)
        table.blockSignals(False)

    def _on_class_item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() != 0:
            return
        excluded = set(self.state.recipe.data.excluded_classes)
        name = item.data(Qt.ItemDataRole.UserRole)
        if item.checkState() == Qt.CheckState.Checked:
            excluded.discard(name)
        else:
            excluded.add(name)
        self.state.update("data", excluded_classes=tuple(sorted(excluded)))

    def set_class_excluded(self, name: str, excluded: bool) -> None:
        """Tick or untick a class, as a click on its checkbox does."""
        for row in range(self.class_table.rowCount()):
            item = self.class_table.item(row, 0)
            if item.data(Qt.ItemDataRole.UserRole) == name:
                item.setCheckState(Qt.CheckState.Unchecked if excluded else Qt.CheckState.Checked)
                return
        raise KeyError(name)

    def _fill_problems(self, dataset: Dataset | None) -> None:
        self.problems_table.clear()
        skipped = dataset.skipped if dataset is not None else ()
        for entry in skipped:
            item = QTreeWidgetItem([Path(entry.path).name, entry.reason])
            item.setToolTip(0, entry.path)
            item.setToolTip(1, entry.reason)
            self.problems_table.addTopLevelItem(item)
        self.problems_table.resizeColumnToContents(0)
        if not skipped and dataset is not None:
            self.problems_table.addTopLevelItem(QTreeWidgetItem(["No problems found", ""]))
        self.tabs.setTabText(1, f"Problems ({len(skipped)})" if skipped else "Problems")

    def _fill_duplicates(self, dataset: Dataset | None) -> None:
        self.duplicates_tree.clear()
        groups = dataset.duplicates if dataset is not None else ()
        for group in groups:
            parent = QTreeWidgetItem([f"{len(group)} identical files: {Path(group[0]).name}"])
            for path in group:
                child = QTreeWidgetItem([path])
                child.setToolTip(0, path)
                parent.addChild(child)
            self.duplicates_tree.addTopLevelItem(parent)
        if not groups and dataset is not None:
            self.duplicates_tree.addTopLevelItem(QTreeWidgetItem(["No duplicates"]))
        self.tabs.setTabText(2, f"Duplicates ({len(groups)})" if groups else "Duplicates")

    def _fill_filter(self, dataset: Dataset | None) -> None:
        current = self.class_filter.currentData()
        self.class_filter.blockSignals(True)
        self.class_filter.clear()
        self.class_filter.addItem("All classes", None)
        for name in dataset.classes if dataset is not None else ():
            self.class_filter.addItem(name, name)
        index = self.class_filter.findData(current)
        self.class_filter.setCurrentIndex(max(index, 0))
        self.class_filter.blockSignals(False)

    def _filter_from_table(self) -> None:
        rows = {index.row() for index in self.class_table.selectedIndexes()}
        if len(rows) == 1:
            name = self.class_table.item(rows.pop(), 0).data(Qt.ItemDataRole.UserRole)
            index = self.class_filter.findData(name)
            if index >= 0:
                self.class_filter.setCurrentIndex(index)

    def _update_thumbnails(self, *_args) -> None:
        dataset = self.state.dataset
        if dataset is None:
            self.thumbnails.set_items([])
            return
        wanted = self.class_filter.currentData()
        items = [
            (item.path, dataset.classes[item.label])
            for item in (*dataset.train, *dataset.val, *dataset.test)
            if wanted is None or dataset.classes[item.label] == wanted
        ]
        items.sort(key=lambda pair: (pair[1], pair[0]))
        self.thumbnails.set_items(items)
        self.thumbnails.scrollTo(self.thumbnails.model().index(0, 0) if items else QModelIndex())

    def _show_split_given(self, given: bool) -> None:
        """Held out and Seed do nothing when the folders already give the split: disable them and say why."""
        for spin in (self.val_spin, self.seed_spin):
            spin.setEnabled(not given)
        self.val_spin.setToolTip(SPLIT_GIVEN_TIP if given else VAL_TIP)
        self.seed_spin.setToolTip(SPLIT_GIVEN_TIP if given else SEED_TIP)

    def _update_summary(self, dataset: Dataset | None) -> None:
        if dataset is None:
            self.summary_label.setText("No images yet: drop a folder above, or use “Add folder…”.")
            self.warnings_label.setVisible(False)
            self._show_split_given(False)
            return
        usable = len(dataset.train) + len(dataset.val) + len(dataset.test)
        parts = [
            f"<b>{counted(len(dataset.classes), 'class')}</b>",
            f"<b>{counted(usable, 'image')}</b> ({len(dataset.train)} train · {len(dataset.val)} validation"
            + (f" · {len(dataset.test)} test" if dataset.test else "") + ")",
        ]
        if dataset.skipped:
            parts.append(f"{counted(len(dataset.skipped), 'file')} skipped (see Problems)")
        layout = "split-folders-test" if dataset.layout == "split-folders" and dataset.test else dataset.layout
        parts.append(f"layout: {LAYOUT_NAMES.get(layout, layout)}")
        self.summary_label.setText("  ·  ".join(parts))
        self._show_split_given(dataset.layout == "split-folders" and bool(dataset.val))
        warnings = []
        if dataset.classes or dataset.excluded_classes:
            warnings.extend(dataset.problems())
        if dataset.empty_classes:
            warnings.append("No usable images in: " + ", ".join(repr(n) for n in dataset.empty_classes) + ".")
        imbalance = imbalance_warning(dataset.counts)
        if imbalance:
            warnings.append(imbalance)
        if dataset.duplicates:
            count = len(dataset.duplicates)
            warnings.append(f"{count} {'group' if count == 1 else 'groups'} of identical files (see Duplicates); "
                            "each group stays on one side of the split.")
        self.warnings_label.setText("\n".join(f"• {w}" for w in warnings))
        self.warnings_label.setVisible(bool(warnings))


def no_images_message(folders: tuple[str, ...], dataset: Dataset) -> str:
    """Why a scan found nothing usable, naming the folders and a few skipped files."""
    names = ", ".join(repr(f) for f in folders)
    if not dataset.skipped:
        return (f"No images found in {names}: the folder is empty. Drop a folder that holds your images, "
                "with one sub-folder per class.")
    examples = "; ".join(f"{Path(s.path).name!r}: {s.reason}" for s in dataset.skipped[:3])
    return (f"No usable images in {names}: {counted(len(dataset.skipped), 'file')}, none of them an image TL Studio can "
            f"read (for example {examples}). Supported: JPEG, PNG, BMP, GIF, WebP, TIFF.")
