"""The Model page's network column: the cut-tensor field, its validation and the network view.

It edits ``recipe.cut_tensor`` of the :class:`~tlstudio.gui.state.ProjectState`
and follows ``cut_changed``. Picking a row or typing a tensor name sets the cut;
the engine's validation appears under the name as it is typed, with one-click
fixes (the model's default cut first when the name is unknown). Before a base
model is loaded it explains the choices instead of showing an empty table.
"""

from __future__ import annotations

import html
from typing import Any, Mapping

from PySide6.QtCore import QStringListModel, Qt, QTimer, Signal
from PySide6.QtWidgets import QCompleter, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from tlstudio.core.spec.errors import TensorNameError, UserError
from tlstudio.gui.health_panel import open_dialog
from tlstudio.gui.state import ProjectState
from tlstudio.gui.tune_dialog import TuneDialog
from tlstudio.gui.widgets.network_view import NetworkView, format_shape

VALIDATE_DELAY_MS = 150
OK_COLOUR = "#2e8b3a"
ERROR_COLOUR = "#c0392b"

INTRO = (
    "<p><b>No base model loaded yet.</b> Three choices make your classifier:</p>"
    "<ol>"
    "<li><b>Base model</b> (left): a network pretrained on ImageNet photos. EfficientNet-Lite0 is fast and "
    "works offline; VGG16/VGG19 are classic and simple to read, but their weights are downloaded.</li>"
    "<li><b>Cut tensor</b> (here): where the base is cut. The last tensor gives whole-object features; an "
    "earlier one keeps textures and edges, better for images unlike photos (microscopy, drawings).</li>"
    "<li><b>Head</b> (left): the small new classifier trained on the cut's features.</li>"
    "</ol>"
    "<p>Press <b>Load base model</b> to see the network's layers and choose the cut. The defaults work: "
    "you can also go straight to <b>Train</b>.</p>"
)


class CutPanel(QWidget):
    """Cut-tensor name field, validation message, suggestions and the network view."""

    compare_requested = Signal()

    def __init__(self, state: ProjectState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._infos: Mapping[str, Any] = {}
        self._suggestion_buttons: list[QPushButton] = []
        self._validate_timer = QTimer(self, singleShot=True, interval=VALIDATE_DELAY_MS)
        self._validate_timer.timeout.connect(lambda: self.validate_cut_text(self.cut_edit.text()))

        column = QVBoxLayout(self)
        column.setContentsMargins(4, 0, 4, 0)
        title = QLabel("<b>Network</b> — pick the tensor the new head is attached to")
        title.setToolTip(
            "A layer such as block4_pool is an operation; its output is a tensor, named 'layer:index' "
            "(block4_pool:0). The head is attached to a tensor."
        )
        column.addWidget(title)
        row = QHBoxLayout()
        row.addWidget(QLabel("Cut tensor"))
        self.cut_edit = QLineEdit()
        self.cut_edit.setObjectName("cutTensorEdit")
        self.cut_edit.setPlaceholderText("e.g. block4_pool:0")
        self.cut_edit.setToolTip(
            "Type a tensor name, 'layer:index' (block4_pool:0), and press Enter. 'block4_pool' alone names the "
            "operation, not its output tensor."
        )
        self._completion = QStringListModel(self)
        completer = QCompleter(self._completion, self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        completer.activated.connect(self.apply_cut_text)
        self.cut_edit.setCompleter(completer)
        self.cut_edit.textEdited.connect(lambda _: self._validate_timer.start())
        self.cut_edit.returnPressed.connect(lambda: self.apply_cut_text(self.cut_edit.text()))
        row.addWidget(self.cut_edit, 1)
        self.compare_button = QPushButton("Compare cuts…")
        self.compare_button.setObjectName("compareCuts")
        self.compare_button.clicked.connect(self.compare_requested)
        row.addWidget(self.compare_button)
        self.tune_button = QPushButton("Find the best recipe…")
        self.tune_button.setToolTip("Search cuts, heads and learning rates on cached features within a time budget")
        self.tune_button.clicked.connect(lambda: open_dialog(TuneDialog(self.state, self)))
        row.addWidget(self.tune_button)
        column.addLayout(row)
        self.cut_message = QLabel()
        self.cut_message.setObjectName("cutMessage")
        self.cut_message.setWordWrap(True)
        self.cut_message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        column.addWidget(self.cut_message)
        self.suggestion_row = QHBoxLayout()
        self.suggestion_row.setContentsMargins(0, 0, 0, 0)
        self.suggestion_row.addStretch(1)
        column.addLayout(self.suggestion_row)
        self.network_view = NetworkView()
        self.network_view.cut_selected.connect(lambda name: self.state.update(cut_tensor=name))
        column.addWidget(self.network_view, 1)
        self.placeholder = QLabel(INTRO)
        self.placeholder.setObjectName("modelIntro")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.placeholder.setWordWrap(True)
        self.placeholder.setTextFormat(Qt.TextFormat.RichText)
        column.addWidget(self.placeholder, 1)
        self.set_catalogue({})

    # ----- the model -----

    def set_catalogue(self, infos: Mapping[str, Any]) -> None:
        """The base model's tensors by name (empty: no model loaded)."""
        self._infos = infos
        self.network_view.set_catalogue(infos.values())
        self._completion.setStringList([name for name, info in infos.items() if info.cuttable])
        has_model = bool(infos)
        self.network_view.setVisible(has_model)
        self.placeholder.setVisible(not has_model)
        self.cut_edit.setEnabled(has_model)

    def default_cut(self) -> str | None:
        """The engine's default cut for the loaded base model, or None."""
        model = self.state.base_model
        if model is None:
            return None
        from tlstudio.core.model.tensors import default_cut_tensor

        try:
            return default_cut_tensor(model)
        except UserError:
            return None

    def effective_cut(self) -> str | None:
        """The recipe's cut tensor, or the engine's default for the loaded model when the recipe has none."""
        return self.state.recipe.cut_tensor or self.default_cut()

    def show_cut(self, fine_tuned: tuple[str, ...] = ()) -> None:
        """Follow the recipe's cut: the view's mark (scrolled into view) and the name field."""
        cut = self.effective_cut()
        self.network_view.set_cut(cut if cut in self._infos else None)
        self.network_view.set_fine_tuned(fine_tuned)
        if cut and not self.cut_edit.hasFocus():
            self.cut_edit.setText(cut)
            if self.state.base_model is not None:
                self.validate_cut_text(cut)

    # ----- typing a name -----

    def validate_cut_text(self, text: str):
        """Check a typed tensor name with the engine; shows ✔ and its shape, or the engine's message."""
        model = self.state.base_model
        self._clear_suggestions()
        if model is None or not text.strip():
            self.cut_message.setText("")
            return None
        from tlstudio.core.model.tensors import resolve_tensor

        try:
            info = resolve_tensor(model, text.strip())
        except TensorNameError as error:
            self._show_error(error)
            self._show_suggestions(self._suggestions_for(text.strip(), error.suggestions))
            return None
        except UserError as error:
            self._show_error(error)
            return None
        self.cut_message.setText(
            f"<span style='color:{OK_COLOUR}'>✔ {html.escape(info.name)}</span> — {info.layer_type} output, "
            f"{format_shape(info.shape)}"
        )
        return info

    def _show_error(self, error: BaseException) -> None:
        self.cut_message.setText(f"<span style='color:{ERROR_COLOUR}'>✖ {html.escape(str(error))}</span>")

    def _suggestions_for(self, text: str, suggestions: tuple[str, ...]) -> list[str]:
        """The engine's suggestions; the default cut first when the name's layer is not in the model."""
        layers = {info.layer for info in self._infos.values()}
        names = list(suggestions)
        default = self.default_cut()
        if default and text.split(":")[0] not in layers:
            names = [default] + names
        return list(dict.fromkeys(names))

    def apply_cut_text(self, text: str) -> bool:
        """Set the cut tensor from a typed name when the engine accepts it; True when it did."""
        self._validate_timer.stop()
        info = self.validate_cut_text(text)
        if info is None:
            return False
        self.state.update(cut_tensor=info.name)
        return True

    def _show_suggestions(self, names) -> None:
        for name in names:
            button = QPushButton(f"Use {name}")
            button.setObjectName("cutSuggestion")
            button.setProperty("tensor", name)
            button.setFlat(True)
            button.setCursor(Qt.CursorShape.PointingHandCursor)
            button.setStyleSheet("QPushButton { color: palette(link); text-decoration: underline; }")
            button.setToolTip(f"Cut at {name}")
            button.clicked.connect(lambda _=False, n=name: self._use_suggestion(n))
            self.suggestion_row.insertWidget(self.suggestion_row.count() - 1, button)
            self._suggestion_buttons.append(button)

    def _clear_suggestions(self) -> None:
        for button in self._suggestion_buttons:
            self.suggestion_row.removeWidget(button)
            button.deleteLater()
        self._suggestion_buttons = []

    def suggestion_buttons(self) -> list[QPushButton]:
        return list(self._suggestion_buttons)

    def _use_suggestion(self, name: str) -> None:
        self.cut_edit.setText(name)
        self.apply_cut_text(name)
