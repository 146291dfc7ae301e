"""The network as a tree of tensors: where the base model can be cut.

One row per tensor of the base model (``core.tensors.catalogue``), in layer
order and grouped by VGG block (``block1 ▸ block1_conv1:0 …``), with its type,
output shape, parameter count and receptive field. Rows are coloured by what
training will do with the layer: frozen (grey-blue), fine-tuned (green), the
cut itself (bold, marked ✂) and the layers past the cut, which the new model
does not use (dimmed, italic). Tensors the model cannot be cut at are grey on
their phase's colour, with the reason as their tooltip; selecting any other row
picks it as the cut tensor. The columns fit without scrolling sideways (the
tensor name is elided in the middle), and the cut row is scrolled into view.

In a network with branches (EfficientNet-Lite0's residual blocks) the tensors
inside one block's branch fold into a collapsed row of their own,
``block3b + skip (add) · 8 layers`` (``core.branches``), followed by the join
(``⊕ block3b_add:0``), where the branch and the skip meet and the model can be
cut again.

Run ``python -m tlstudio.gui.widgets.network_view`` to see VGG16's layer table.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from PySide6.QtCore import QEvent, QItemSelectionModel, QModelIndex, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPalette, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QTreeView, QVBoxLayout, QWidget

from tlstudio.core.model.branches import BranchUnit, branch_units
from tlstudio.core.spec.text import article, counted, shape_text

FROZEN_COLOUR = QColor(110, 140, 185, 70)
TRAINABLE_COLOUR = QColor(60, 175, 80, 95)
CUT_MARK = "✂"
JOIN_MARK = "⊕"

COLUMNS = ("Tensor", "Type", "Output shape", "Params", "Receptive field", "Training")
INFO_ROLE = Qt.ItemDataRole.UserRole + 1
TIP_ROLE = Qt.ItemDataRole.UserRole + 2

_HEADER_TIPS = (
    "A tensor is one output of an operation (a layer), named 'layer:index': block4_pool is the "
    "max-pooling operation, block4_pool:0 its first (and only) output. The new head is attached to a tensor.",
    "The kind of layer that produces the tensor.",
    "The tensor's shape per image: height x width x channels for feature maps.",
    "Weights in the layer that produces the tensor.",
    "How many input pixels (square side) one value of the tensor is computed from / the spacing "
    "in pixels between neighbouring values. Deeper tensors see larger patches and more abstract patterns.",
    "What training does with the layer: frozen (kept as pretrained), fine-tuned (trained in the "
    "fine-tuning phase), or not used (past the cut).",
)


def format_shape(shape: Sequence[int | None]) -> str:
    """``(None, 7, 7, 512)`` → ``7 × 7 × 512`` (the batch axis left out)."""
    return shape_text(shape, separator=" × ")


SHORT_TYPES = {
    "BatchNormalization": "BatchNorm", "GlobalAveragePooling2D": "GlobalAvgPool", "DepthwiseConv2D": "DWConv2D",
}
"""Layer types as the narrow Type column shows them (the tooltip names them in full)."""


def short_field(info) -> str:
    """The receptive-field column, narrow: ``403 px / 32`` (patch side / spacing), ``whole image``."""
    if info.receptive_field is None:
        return "unknown"
    if info.jump is None:
        return "whole image"
    return f"{info.receptive_field} px / {info.jump}"


class NetworkView(QWidget):
    """The tensor tree of a base model; emits ``cut_selected(name)`` when the user picks a row."""

    cut_selected = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._infos: list = []
        self._items: dict[str, QStandardItem] = {}
        self._cut: str | None = None
        self._fine_tuned: frozenset[str] = frozenset()
        self._units: dict[str, tuple[BranchUnit, QStandardItem]] = {}
        self._syncing = False
        self._keep_cut_in_view = False

        self.model = QStandardItemModel(0, len(COLUMNS), self)
        self.model.setHorizontalHeaderLabels(list(COLUMNS))
        for column, tip in enumerate(_HEADER_TIPS):
            self.model.horizontalHeaderItem(column).setToolTip(tip)
        self.tree = QTreeView()
        self.tree.setModel(self.model)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.tree.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.tree.setIndentation(14)
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setMinimumSectionSize(40)
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        # What training does with a row shows as its colour (see the legend) and in its tooltip; a sixth
        # column would push the receptive field out of sight at the default window size.
        self.tree.setColumnHidden(len(COLUMNS) - 1, True)
        self.tree.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.tree.selectionModel().currentRowChanged.connect(self._on_current_changed)
        # The view grows as the page around it fills in after a model loads; until the user scrolls,
        # each resize brings the cut row back into view.
        self.tree.viewport().installEventFilter(self)
        self.tree.verticalScrollBar().actionTriggered.connect(self._user_scrolled)

        legend = QHBoxLayout()
        legend.setContentsMargins(0, 0, 0, 0)
        for colour, text, tip in (
            (FROZEN_COLOUR, "frozen", "Kept as pretrained: these weights do not change."),
            (TRAINABLE_COLOUR, "fine-tuned", "Trained, at a lower learning rate, in the fine-tuning phase."),
        ):
            swatch = QLabel()
            swatch.setFixedSize(14, 14)
            swatch.setStyleSheet(
                f"background: rgba({colour.red()},{colour.green()},{colour.blue()},{colour.alpha()});"
                "border: 1px solid palette(mid);"
            )
            label = QLabel(text)
            label.setToolTip(tip)
            legend.addWidget(swatch)
            legend.addWidget(label)
            legend.addSpacing(10)
        cut_label = QLabel(f"<b>{CUT_MARK} cut</b>")
        cut_label.setToolTip("The head is attached to this tensor.")
        legend.addWidget(cut_label)
        legend.addSpacing(10)
        self.join_label = QLabel(f"<b>{JOIN_MARK}</b> join")
        self.join_label.setToolTip(
            "Where a block's branch and its skip connection (or parallel paths) meet again. "
            "Tensors inside a branch cannot be cut; a join can."
        )
        legend.addWidget(self.join_label)
        legend.addSpacing(10)
        unused = QLabel("<i>dimmed</i>: past the cut · <span style='color:gray'>grey</span>: cannot be cut")
        unused.setToolTip("Dimmed italic rows come after the cut and are not used by the new model. Grey rows "
                          "cannot be the cut: the input, or a tensor inside a branch that joins again later.")
        legend.addWidget(unused)
        legend.addStretch(1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tree)
        layout.addLayout(legend)

    @property
    def infos(self) -> list:
        return list(self._infos)

    @property
    def cut(self) -> str | None:
        return self._cut

    def tensor_names(self) -> list[str]:
        """Every tensor name shown, in layer order."""
        return [info.name for info in self._infos]

    def set_catalogue(self, infos: Iterable) -> None:
        """Show a model's tensors (``core.tensors.TensorInfo`` entries, in layer order)."""
        self._infos = list(infos)
        self._items.clear()
        self._units.clear()
        self.model.removeRows(0, self.model.rowCount())
        groups: dict[str, QStandardItem] = {}
        root = self.model.invisibleRootItem()
        unit_of = {name: unit for unit in branch_units(self._infos) for name in unit.members}
        for info in self._infos:
            row = self._row_items(info)
            parent = root
            if info.block:
                parent = groups.get(info.block)
                if parent is None:
                    parent = self._group_row(info.block, root)
                    groups[info.block] = parent
            unit = unit_of.get(info.name)
            if unit is not None:
                if unit.join not in self._units:
                    self._units[unit.join] = (unit, self._unit_row(unit, parent))
                parent = self._units[unit.join][1]
            parent.appendRow(row)
            self._items[info.name] = row[0]
        for group in groups.values():
            self._summarise_group(group)
        self.tree.expandAll()
        for unit, group in self._units.values():
            self._summarise_unit(unit, group)
            self.tree.collapse(group.index())
        self.join_label.setVisible(bool(self._units))
        self._restyle()

    def branch_units(self) -> list[BranchUnit]:
        """The folded branch units shown, in order (none for a plain chain like VGG)."""
        return [unit for unit, _ in self._units.values()]

    def unit_index(self, join: str) -> QModelIndex:
        """The model index of the folded row of the branch unit that joins at ``join``."""
        return self._units[join][1].index()

    def set_cut(self, name: str | None) -> None:
        """Mark ``name`` as the cut tensor and select its row (no signal)."""
        self._cut = name
        self._restyle()
        item = self._items.get(name) if name else None
        self._keep_cut_in_view = item is not None
        self._syncing = True
        try:
            if item is None:
                self.tree.selectionModel().clearSelection()
            else:
                index = item.index()
                self.tree.selectionModel().setCurrentIndex(
                    index,
                    QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows,
                )
                self.tree.scrollTo(index, QAbstractItemView.ScrollHint.PositionAtCenter)
                # Once the new rows are laid out (after a model is loaded), bring the cut into view again.
                QTimer.singleShot(0, self, lambda n=name: self._scroll_to(n))
        finally:
            self._syncing = False

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Resize and self._keep_cut_in_view and self._cut:
            QTimer.singleShot(0, self, lambda n=self._cut: self._scroll_to(n))
        return super().eventFilter(watched, event)

    def _user_scrolled(self, _action: int) -> None:
        self._keep_cut_in_view = False

    def _scroll_to(self, name: str) -> None:
        item = self._items.get(name)
        if item is not None:
            self.tree.scrollTo(item.index(), QAbstractItemView.ScrollHint.PositionAtCenter)

    def set_fine_tuned(self, layer_names: Iterable[str]) -> None:
        """The base layers the fine-tuning phase would train (coloured green)."""
        self._fine_tuned = frozenset(layer_names)
        self._restyle()

    def index_of(self, name: str) -> QModelIndex:
        """The model index of a tensor's row (first column)."""
        return self._items[name].index()

    def role_of(self, name: str) -> str:
        """The text of a tensor's "Training" column: frozen, fine-tuned, cut, not used, …"""
        item = self._items[name]
        return self._sibling(item, COLUMNS.index("Training")).text()

    def _row_items(self, info) -> list[QStandardItem]:
        texts = (
            info.name, SHORT_TYPES.get(info.layer_type, info.layer_type), format_shape(info.shape).replace(" ", ""),
            f"{info.params:,}", short_field(info), "",
        )
        items = [QStandardItem(text) for text in texts]
        for column, item in enumerate(items):
            item.setData(info, INFO_ROLE)
            item.setEditable(False)
            if column in (3,):
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if info.cuttable:
            tip = f"{info.name}: output of the {info.layer_type} layer '{info.layer}'. Click to attach the head here."
            if info.receptive_field is not None and info.jump is not None:
                tip += (
                    f"\nEach value sees {article(info.receptive_field)} {info.receptive_field}×{info.receptive_field}-pixel patch of the "
                    f"input; neighbouring values are {info.jump} px apart."
                )
        else:
            tip = f"{info.name} cannot be the cut tensor: {info.reason}"
            for item in items:
                item.setFlags(Qt.ItemFlag.ItemIsEnabled)
        for item in items:
            item.setData(tip, TIP_ROLE)
            item.setToolTip(tip)
        return items

    def _group_row(self, block: str, root: QStandardItem) -> QStandardItem:
        items = [QStandardItem(block)] + [QStandardItem("") for _ in COLUMNS[1:]]
        for item in items:
            item.setFlags(Qt.ItemFlag.ItemIsEnabled)
        font = QFont(self.font())
        font.setBold(True)
        items[0].setFont(font)
        root.appendRow(items)
        return items[0]

    def _unit_row(self, unit: BranchUnit, parent: QStandardItem) -> QStandardItem:
        items = [QStandardItem(unit.label())] + [QStandardItem("") for _ in COLUMNS[1:]]
        for item in items:
            item.setFlags(Qt.ItemFlag.ItemIsEnabled)
        parent.appendRow(items)
        return items[0]

    def _infos_under(self, group: QStandardItem) -> list:
        """The tensors of a group's rows, those in folded branch units included, in order."""
        found = []
        for r in range(group.rowCount()):
            child = group.child(r, 0)
            info = child.data(INFO_ROLE)
            found.extend([info] if info is not None else self._infos_under(child))
        return found

    def _summarise_group(self, group: QStandardItem) -> None:
        children = self._infos_under(group)
        parent = group.parent() or self.model.invisibleRootItem()
        row = group.row()
        parent.child(row, 1).setText(counted(len(children), "layer"))
        parent.child(row, 2).setText(shape_text(children[-1].shape, separator="×"))
        parent.child(row, 3).setText(f"{sum(c.params for c in children):,}")
        parent.child(row, 3).setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if children[-1].layer_type == "MaxPooling2D":
            tip = f"VGG block {group.text()[5:]}: convolutions followed by a 2×2 max-pool that halves the size."
        else:
            tip = (f"{group.text()}: the layers named {group.text()}…, "
                   f"ending at {format_shape(children[-1].shape)}.")
        group.setToolTip(tip)

    def _summarise_unit(self, unit: BranchUnit, group: QStandardItem) -> None:
        children = self._infos_under(group)
        parent = group.parent() or self.model.invisibleRootItem()
        row = group.row()
        parent.child(row, 1).setText(counted(len(children), "layer"))
        parent.child(row, 3).setText(f"{sum(c.params for c in children):,}")
        parent.child(row, 3).setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if unit.skip:
            what = (f"{unit.summary()}.\nA residual block: its {counted(len(children), 'layer')} compute a change that "
                    f"{unit.join} adds to the block's input, which skips past them unchanged.")
        else:
            what = (f"{unit.summary()}.\n{counted(len(children), 'layer')} on parallel paths that {unit.join} "
                    f"({unit.join_type}) combines.")
        tip = (f"{what}\nTensors inside cannot be the cut: the join also needs the other path. "
               f"Cut at {unit.join} ({JOIN_MARK}) or earlier. Expand to see the layers.")
        for column in range(len(COLUMNS)):
            parent.child(row, column).setToolTip(tip)

    def _sibling(self, item: QStandardItem, column: int) -> QStandardItem:
        parent = item.parent() or self.model.invisibleRootItem()
        return parent.child(item.row(), column)

    def _restyle(self) -> None:
        """Colour rows by role: frozen, fine-tuned, the cut, past the cut, not cuttable."""
        names = self.tensor_names()
        cut_position = names.index(self._cut) if self._cut in names else len(names) - 1
        palette = self.palette()
        disabled = palette.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
        normal_font = QFont(self.font())
        bold_font = QFont(self.font())
        bold_font.setBold(True)
        italic_font = QFont(self.font())
        italic_font.setItalic(True)
        for position, info in enumerate(self._infos):
            item = self._items[info.name]
            row = [self._sibling(item, column) for column in range(len(COLUMNS))]
            background = QBrush()
            foreground = QBrush()
            font = normal_font
            if position > cut_position:
                role = "not used (past the cut)"
                foreground = QBrush(disabled)
                font = italic_font
            elif not info.cuttable and position == 0:
                role = "input"
                foreground = QBrush(disabled)
            else:
                tuned = info.layer in self._fine_tuned
                role = "fine-tuned" if tuned else "frozen"
                if not info.params:
                    role = "no weights"
                background = QBrush(TRAINABLE_COLOUR if tuned else FROZEN_COLOUR)
                if not info.cuttable:
                    foreground = QBrush(disabled)
                    role += ", cannot be cut here"
            if info.name == self._cut:
                font = bold_font
                role = f"{CUT_MARK} cut ({role})"
            unit = self._units.get(info.name)
            mark = CUT_MARK if info.name == self._cut else JOIN_MARK if unit else ""
            row[0].setText(f"{mark} {info.name}" if mark else info.name)
            row[-1].setText(role)
            tip = f"{row[0].data(TIP_ROLE)}\nTraining: {role}."
            if unit is not None:
                skip = "the skip connection" if unit[0].skip else "the other paths"
                tip += f"\n{JOIN_MARK} Join: {unit[0].name}'s branch and {skip} meet here."
            for cell in row:
                cell.setToolTip(tip)
                cell.setBackground(background)
                cell.setForeground(foreground)
                cell.setFont(font)
        for join, (_unit, group) in self._units.items():
            past = names.index(join) > cut_position
            parent = group.parent() or self.model.invisibleRootItem()
            for column in range(len(COLUMNS)):
                cell = parent.child(group.row(), column)
                cell.setForeground(QBrush(disabled) if past else QBrush())
                cell.setFont(italic_font if past else normal_font)

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if self._syncing or not current.isValid():
            return
        info = current.siblingAtColumn(0).data(INFO_ROLE)
        if info is not None and info.cuttable:
            self.cut_selected.emit(info.name)


def _vgg16_catalogue() -> list:
    """VGG16's tensors without the top at 224 px, written out without building the model."""
    from tlstudio.core.model.tensors import TensorInfo

    infos = [TensorInfo(
        "input_layer:0", "input_layer", "InputLayer", (None, 224, 224, 3), 0, 0, 1, 1, False,
        "the input cannot be cut: nothing of the base model would remain; cut at a tensor after it", "",
    )]
    size, channels, field, jump = 224, 3, 1, 1
    for block, (convs, filters) in enumerate(((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)), start=1):
        for conv in range(1, convs + 1):
            params = 9 * channels * filters + filters
            channels = filters
            field += 2 * jump
            name = f"block{block}_conv{conv}"
            infos.append(TensorInfo(
                f"{name}:0", name, "Conv2D", (None, size, size, filters), params, params, field, jump, True, "",
                f"block{block}",
            ))
        size //= 2
        field += jump
        jump *= 2
        name = f"block{block}_pool"
        infos.append(TensorInfo(
            f"{name}:0", name, "MaxPooling2D", (None, size, size, channels), 0, 0, field, jump, True, "", f"block{block}",
        ))
    return infos


def _demo() -> None:
    from tlstudio.gui.widgets.demo import demo_app, show_demo

    demo_app()
    widget = NetworkView()
    widget.set_catalogue(_vgg16_catalogue())
    widget.set_cut("block4_pool:0")
    widget.set_fine_tuned(["block4_conv2", "block4_conv3"])
    widget.cut_selected.connect(lambda name: (widget.set_cut(name), print("cut tensor:", name)))
    show_demo(widget, "Network view — VGG16 (demo)", (820, 640))


if __name__ == "__main__":
    _demo()
