"""The Model page's head and fine-tuning forms: pooling, batch norm, hidden units, dropout, fine-tuning.

They edit ``recipe.head`` and the fine-tuning fields of ``recipe.training`` and
follow ``head_changed`` and ``training_changed``. The "Or from layer" list is
filled from the base model's layers with weights (:meth:`HeadForm.set_layers`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from PySide6.QtCore import QSignalBlocker
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from tlstudio.core.spec.errors import RecipeError
from tlstudio.core.spec.hidden_units import hidden_units_text
from tlstudio.gui.state import ProjectState

ERROR_COLOUR = "#c0392b"

BATCH_NORM_TIP = (
    "<p><b>Batch normalisation</b> rescales each feature to zero mean and unit variance, using the mean "
    "and variance of the current batch while training (and running averages of them afterwards), then "
    "applies a learnt scale (gamma) and shift (beta).</p>"
    "<p>Features cut from a pretrained network have very different ranges; normalising them lets the head "
    "train faster, with less sensitivity to the learning rate.</p>"
    "<p>On: the pooled features are normalised, and each hidden layer becomes "
    "Dense <i>without bias</i> → BatchNorm → ReLU. The bias is dropped because the normalisation "
    "subtracts the mean, which cancels any constant a bias would add; beta takes its place.</p>"
    "<p>Off: the Dense layers keep their bias and nothing is normalised.</p>"
)


class HeadForm(QWidget):
    """The head (new classifier) and fine-tuning settings of the recipe.

    ``parse_hidden`` turns the hidden-units text into sizes (raising
    RecipeError), so the form and the command line read it the same way.
    """

    def __init__(self, state: ProjectState, parse_hidden: Callable[[str], tuple[int, ...]],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._parse_hidden = parse_hidden
        self._layers: tuple[str, ...] = ()
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self._build_head())
        column.addWidget(self._build_tuning())
        state.head_changed.connect(self._sync_head)
        state.training_changed.connect(self._sync_tuning)
        self._sync_head()
        self._sync_tuning()

    def _build_head(self) -> QGroupBox:
        box = QGroupBox("Head (the new classifier)")
        form = QFormLayout(box)
        self.pooling_combo = QComboBox()
        self.pooling_combo.addItem("Global average pooling", "avg")
        self.pooling_combo.addItem("Flatten", "flatten")
        self.pooling_combo.setToolTip(
            "How a feature map (height × width × channels) becomes one feature vector. Average pooling keeps one "
            "number per channel and ignores position: few parameters, robust. Flatten keeps every value: many "
            "more parameters, sensitive to where things are."
        )
        self.pooling_combo.activated.connect(lambda _: self._update("head", pooling=self.pooling_combo.currentData()))
        form.addRow("Pooling", self.pooling_combo)
        self.batch_norm_check = QCheckBox("Batch normalisation")
        self.batch_norm_check.setToolTip(BATCH_NORM_TIP)
        self.batch_norm_check.toggled.connect(lambda on: self._update("head", batch_norm=bool(on)))
        form.addRow(self.batch_norm_check)
        self.hidden_edit = QLineEdit()
        self.hidden_edit.setPlaceholderText("none — e.g. 256, 128")
        self.hidden_edit.setToolTip(
            "Sizes of hidden Dense layers between the features and the output, separated by commas. "
            "Empty: the features go straight to the output layer (a linear classifier), often enough."
        )
        self.hidden_edit.editingFinished.connect(self._on_hidden_edited)
        form.addRow("Hidden units", self.hidden_edit)
        self.hidden_message = QLabel()
        self.hidden_message.setWordWrap(True)
        self.hidden_message.setStyleSheet(f"color: {ERROR_COLOUR};")
        self.hidden_message.setVisible(False)
        form.addRow(self.hidden_message)
        self.dropout_spin = QDoubleSpinBox()
        self.dropout_spin.setRange(0.0, 0.9)
        self.dropout_spin.setSingleStep(0.05)
        self.dropout_spin.setDecimals(2)
        self.dropout_spin.setKeyboardTracking(False)
        self.dropout_spin.setToolTip(
            "Share of features set to zero at random while training, before the output layer. "
            "Fights over-fitting on small datasets; 0 turns it off."
        )
        self.dropout_spin.valueChanged.connect(lambda v: self._update("head", dropout=float(v)))
        form.addRow("Dropout", self.dropout_spin)
        return box

    def _build_tuning(self) -> QGroupBox:
        box = QGroupBox("Fine-tuning (after the head)")
        form = QFormLayout(box)
        self.fine_tune_epochs_spin = QSpinBox()
        self.fine_tune_epochs_spin.setRange(0, 1000)
        self.fine_tune_epochs_spin.setSpecialValueText("off")
        self.fine_tune_epochs_spin.setKeyboardTracking(False)
        self.fine_tune_epochs_spin.setToolTip(
            "Epochs of a second phase that also trains the last layers of the base, at a lower learning rate, "
            "so they adapt to your images. 0 turns fine-tuning off."
        )
        self.fine_tune_epochs_spin.valueChanged.connect(lambda v: self._update("training", fine_tune_epochs=int(v)))
        form.addRow("Epochs", self.fine_tune_epochs_spin)
        self.fine_tune_layers_spin = QSpinBox()
        self.fine_tune_layers_spin.setRange(1, 200)
        self.fine_tune_layers_spin.setKeyboardTracking(False)
        self.fine_tune_layers_spin.setToolTip("How many of the base's last layers with weights (before the cut) to train.")
        self.fine_tune_layers_spin.valueChanged.connect(lambda v: self._update("training", fine_tune_layers=int(v)))
        form.addRow("Last layers", self.fine_tune_layers_spin)
        self.fine_tune_from_combo = QComboBox()
        self.fine_tune_from_combo.setToolTip("Or train every layer from this one on (overrides 'Last layers').")
        self.fine_tune_from_combo.activated.connect(
            lambda _: self._update("training", fine_tune_from=self.fine_tune_from_combo.currentData())
        )
        form.addRow("Or from layer", self.fine_tune_from_combo)
        self.fine_tune_lr_spin = QDoubleSpinBox()
        self.fine_tune_lr_spin.setRange(0.001, 1.0)
        self.fine_tune_lr_spin.setDecimals(3)
        self.fine_tune_lr_spin.setSingleStep(0.05)
        self.fine_tune_lr_spin.setPrefix("× ")
        self.fine_tune_lr_spin.setKeyboardTracking(False)
        self.fine_tune_lr_spin.setToolTip("The fine-tuning learning rate is the head's learning rate times this.")
        self.fine_tune_lr_spin.valueChanged.connect(lambda v: self._update("training", fine_tune_lr_factor=float(v)))
        form.addRow("Learning rate", self.fine_tune_lr_spin)
        return box

    def _update(self, section: str, **changes: Any) -> None:
        """Apply a change; a refused value shows the engine's message and the widgets revert."""
        try:
            self.state.update(section, **changes)
        except RecipeError as error:
            self.state.error.emit(error)
            self._sync_head()
            self._sync_tuning()

    def _sync_head(self, _head: object = None) -> None:
        head = self.state.recipe.head
        blockers = [QSignalBlocker(w) for w in (self.pooling_combo, self.batch_norm_check, self.dropout_spin)]
        self.pooling_combo.setCurrentIndex(max(0, self.pooling_combo.findData(head.pooling)))
        self.batch_norm_check.setChecked(head.batch_norm)
        if not self.hidden_edit.hasFocus():
            self.hidden_edit.setText(hidden_units_text(head.hidden_units))
        self.dropout_spin.setValue(head.dropout)
        del blockers

    def _sync_tuning(self, _training: object = None) -> None:
        training = self.state.recipe.training
        blockers = [QSignalBlocker(w) for w in (self.fine_tune_epochs_spin, self.fine_tune_layers_spin,
                                                self.fine_tune_from_combo, self.fine_tune_lr_spin)]
        self.fine_tune_epochs_spin.setValue(training.fine_tune_epochs)
        self.fine_tune_layers_spin.setValue(training.fine_tune_layers)
        self.fine_tune_lr_spin.setValue(training.fine_tune_lr_factor)
        self._fill_fine_tune_from()
        tuning = training.fine_tune_epochs > 0
        self.fine_tune_from_combo.setEnabled(tuning)
        self.fine_tune_lr_spin.setEnabled(tuning)
        self.fine_tune_layers_spin.setEnabled(tuning and training.fine_tune_from is None)
        del blockers

    def set_layers(self, names: Iterable[str]) -> None:
        """The base model's layers with weights, offered in "Or from layer"."""
        self._layers = tuple(dict.fromkeys(names))
        blocker = QSignalBlocker(self.fine_tune_from_combo)
        self._fill_fine_tune_from()
        del blocker

    def _fill_fine_tune_from(self) -> None:
        current = self.state.recipe.training.fine_tune_from
        self.fine_tune_from_combo.clear()
        self.fine_tune_from_combo.addItem("— (use 'Last layers')", None)
        for name in self._layers:
            self.fine_tune_from_combo.addItem(name, name)
        if current is not None and self.fine_tune_from_combo.findData(current) < 0:
            self.fine_tune_from_combo.addItem(current, current)
        self.fine_tune_from_combo.setCurrentIndex(max(0, self.fine_tune_from_combo.findData(current)))

    def _on_hidden_edited(self) -> None:
        try:
            units = self._parse_hidden(self.hidden_edit.text())
        except RecipeError as error:
            self.hidden_message.setText(str(error))
            self.hidden_message.setVisible(True)
            return
        self.hidden_message.setVisible(False)
        if units != self.state.recipe.head.hidden_units:
            self._update("head", hidden_units=units)
