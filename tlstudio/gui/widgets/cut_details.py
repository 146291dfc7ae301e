"""The Model page's "What the cut means" box: feature-map size and the receptive field on a sample image."""

from __future__ import annotations

import html

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGroupBox, QLabel, QVBoxLayout, QWidget

from tlstudio.core.spec.text import article
from tlstudio.gui.widgets.receptive_field_view import ReceptiveFieldView


class CutDetails(QGroupBox):
    """Describes one cut tensor: what the head receives and what one of its values sees."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("What the cut means", parent)
        column = QVBoxLayout(self)
        self.details = QLabel()
        self.details.setObjectName("cutDetails")
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.TextFormat.RichText)
        column.addWidget(self.details)
        self.field_view = ReceptiveFieldView()
        self.field_view.setMinimumSize(220, 220)
        column.addWidget(self.field_view, 1)
        self.field_caption = QLabel()
        self.field_caption.setWordWrap(True)
        column.addWidget(self.field_caption)

    def show_tensor(self, info, input_size: int, image: np.ndarray, pooling: str, no_cut_text: str = "") -> None:
        """Show ``info`` (a tensor of the catalogue), or ``no_cut_text`` when it is None."""
        self.field_view.set_image(image)
        if info is None:
            self.details.setText(no_cut_text)
            self.field_view.set_field(input_size, None, None)
            self.field_caption.setText("")
            return
        self.details.setText(describe_cut(info, pooling))
        spatial = len(info.shape) == 4 and info.jump is not None
        cells = info.shape[1] if spatial and info.shape[1] else 0
        self.field_view.set_field(input_size, info.receptive_field, info.jump if spatial else None, cells or 0)
        self.field_caption.setText(field_caption(info, input_size))


def describe_cut(info, pooling: str) -> str:
    """What the head gets from this tensor, as rich text."""
    shape = list(info.shape[1:])
    values = int(np.prod([d for d in shape if d])) if shape else 0
    lines = [f"<b>{html.escape(info.name)}</b>: the output of the {info.layer_type} layer "
             f"<i>{html.escape(info.layer)}</i>."]
    if len(shape) == 3:
        height, width, channels = shape
        lines.append(f"Feature map: <b>{height} × {width} × {channels}</b> ({values:,} values per image).")
        if pooling == "avg":
            lines.append(f"After global average pooling the head gets <b>{channels:,} features</b> (one per channel).")
        else:
            lines.append(f"Flattened, the head gets <b>{values:,} features</b>.")
    else:
        lines.append(f"A vector of <b>{values:,} features</b> per image.")
    return "<br>".join(lines)


def field_caption(info, input_size: int) -> str:
    """What one value of the tensor sees of the input, in words."""
    field, jump = info.receptive_field, info.jump
    if field is None:
        return "The receptive field of this tensor is unknown (a layer with an unusual effect on positions)."
    if jump is None:
        return "Every value of this tensor depends on the whole image."
    text = (f"Receptive field: each value is computed from {article(field)} {field} × {field}-pixel patch of the "
            f"{input_size} × {input_size} input (yellow); neighbouring values are {jump} px apart "
            f"(red: one cell).")
    if field > input_size:
        text += " The patch is larger than the image: each value sees all of it, the edges padded with zeros."
    return text + " Click the image to move the patch."
