"""The Model page: choose the base model, where to cut it, and the new head.

Left: the base model (VGG16/VGG19 with or without the top, EfficientNet-Lite0,
or the user's file), its input size and where its weights come from
(downloaded with progress and cancel, or imported from a file). Middle: the
network as a tree of tensors; picking a row or typing a tensor name sets the
cut tensor, and the engine's validation appears under the name as it is
typed; "Compare cuts…" previews a few cuts with a quick linear classifier
(:mod:`tlstudio.gui.cut_comparison_dialog`). Right: what the cut means
(feature-map size, receptive field drawn on a sample image), the head options
and a live summary of trainable and frozen parameters, built with the
engine's own ``build_classifier`` off the GUI thread.

Everything here edits :class:`~tlstudio.gui.state.ProjectState`; slow work
(building models, downloading, hashing) runs through
:func:`tlstudio.gui.workers.run_in_thread`. TensorFlow is only imported
inside those workers.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QSignalBlocker, QStringListModel, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QCompleter,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from tlstudio.core.spec.errors import RecipeError, TensorNameError, UserError, WeightsError
from tlstudio.core.spec.events import Progress
from tlstudio.core.spec.hidden_units import hidden_units_text, parse_hidden_units
from tlstudio.core.model.summary import ModelSummary, build_summary
from tlstudio.core.spec.bases import base_info, menu_choices
from tlstudio.core.spec.recipe import BaseSpec
from tlstudio.gui import workers
from tlstudio.gui.cut_comparison_dialog import CutComparisonDialog
from tlstudio.gui.health_panel import open_dialog
from tlstudio.gui.tune_dialog import TuneDialog
from tlstudio.gui.state import ProjectState
from tlstudio.gui.widgets.network_view import NetworkView, format_shape
from tlstudio.gui.widgets.receptive_field_view import ReceptiveFieldView

# (label, BaseSpec.name, include_top)
BASE_CHOICES: tuple[tuple[str, str, bool], ...] = menu_choices()
SUMMARY_DELAY_MS = 250
VALIDATE_DELAY_MS = 150
OK_COLOUR = "#2e8b3a"
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


def sample_image(state: ProjectState, size: int) -> np.ndarray:
    """The first training image of the dataset, or a generated one when there is none."""
    dataset = state.dataset
    if dataset is not None and dataset.train:
        try:
            from tlstudio.core.data.images import load_rgb

            return load_rgb(dataset.train[0].path)
        except UserError:
            pass
    from tlstudio.core.data.samples import sample_image as generated

    return generated(0, np.random.default_rng(3), size=max(48, size))


class ModelPage(QWidget):
    """Base model, cut tensor and head of the project's recipe."""

    summary_ready = Signal(object)
    base_built = Signal(object)
    weights_changed = Signal()

    def __init__(self, state: ProjectState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.summary: ModelSummary | None = None
        self._infos: dict[str, Any] = {}
        self._shown_base: BaseSpec | None = None
        self._built_spec: BaseSpec | None = None
        self._sample: tuple[int, np.ndarray] | None = None
        self._weights_job: workers.WorkerHandle | None = None
        self._build_job: workers.WorkerHandle | None = None
        self._summary_job: workers.WorkerHandle | None = None
        self._summary_pending = False
        self._suggestion_buttons: list[QPushButton] = []

        self._summary_timer = QTimer(self, singleShot=True, interval=SUMMARY_DELAY_MS)
        self._summary_timer.timeout.connect(self.refresh_summary)
        self._validate_timer = QTimer(self, singleShot=True, interval=VALIDATE_DELAY_MS)
        self._validate_timer.timeout.connect(lambda: self.validate_cut_text(self.cut_edit.text()))

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self._scrolling(self._build_left()))
        splitter.addWidget(self._build_middle())
        splitter.addWidget(self._scrolling(self._build_right()))
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setStretchFactor(2, 0)
        splitter.setSizes([340, 640, 360])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(splitter)

        state.recipe_changed.connect(self._on_recipe_changed)
        state.base_model_changed.connect(self._on_base_model_changed)
        state.dataset_changed.connect(self._on_dataset_changed)
        self._sync_from_recipe()
        self._on_base_model_changed(state.base_model)

    # ----- layout ---------------------------------------------------------------------------------------------

    @staticmethod
    def _scrolling(widget: QWidget) -> QScrollArea:
        area = QScrollArea()
        area.setWidget(widget)
        area.setWidgetResizable(True)
        area.setFrameShape(QScrollArea.Shape.NoFrame)
        area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        area.setMinimumWidth(widget.minimumSizeHint().width() + 12)
        return area

    def _build_left(self) -> QWidget:
        panel = QWidget()
        column = QVBoxLayout(panel)
        column.setContentsMargins(0, 0, 4, 0)

        base_box = QGroupBox("Base model")
        form = self._base_form = QFormLayout(base_box)
        self.base_combo = QComboBox()
        self.base_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.base_combo.setMinimumContentsLength(18)
        for label, name, top in BASE_CHOICES:
            self.base_combo.addItem(label, (name, top))
        self.base_combo.setToolTip(
            "The pretrained network whose layers extract features from your images. VGG16/VGG19 without the "
            "top end at block5_pool; with the top they keep fc1 and fc2 (224×224 inputs only). "
            "EfficientNet-Lite0 is much faster on a CPU and its weights ship with TL Studio."
        )
        self.base_combo.activated.connect(self._on_base_chosen)
        form.addRow("Network", self.base_combo)
        self.model_file_label = QLabel()
        self.model_file_label.setWordWrap(True)
        self.model_file_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("File", self.model_file_label)
        self.weights_combo = QComboBox()
        self.weights_combo.addItem("ImageNet (pretrained)", "imagenet")
        self.weights_combo.addItem("Random (no pretraining)", "none")
        self.weights_combo.setToolTip(
            "ImageNet: weights learnt on 1.2 million photos, the point of transfer learning. "
            "Random: start from scratch (needs far more images)."
        )
        self.weights_combo.activated.connect(self._on_weights_chosen)
        form.addRow("Weights", self.weights_combo)
        self.input_size_spin = QSpinBox()
        self.input_size_spin.setRange(16, 1024)
        self.input_size_spin.setSingleStep(16)
        self.input_size_spin.setSuffix(" px")
        self.input_size_spin.setKeyboardTracking(False)
        self.input_size_spin.setToolTip(
            "Images are resized to this square before entering the network. 224 is what VGG was trained at; "
            "smaller is faster, larger keeps more detail. Fixed at 224 with the fully-connected top."
        )
        self.input_size_spin.valueChanged.connect(lambda v: self._update("base", input_size=int(v)))
        form.addRow("Input size", self.input_size_spin)

        self.weights_status = QLabel()
        self.weights_status.setWordWrap(True)
        self.weights_status.setObjectName("weightsStatus")
        form.addRow(self.weights_status)
        buttons = QHBoxLayout()
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self.download_weights)
        self.import_button = QPushButton("Import file…")
        self.import_button.setToolTip("Use a weights .h5 file you already have (checked against the official hash).")
        self.import_button.clicked.connect(self._choose_weights_file)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self._cancel_weights_job)
        for button in (self.download_button, self.import_button, self.cancel_button):
            buttons.addWidget(button)
        form.addRow(buttons)
        self.weights_progress = QProgressBar()
        self.weights_progress.setVisible(False)
        form.addRow(self.weights_progress)
        self.weights_message = QLabel()
        self.weights_message.setObjectName("weightsMessage")
        self.weights_message.setWordWrap(True)
        self.weights_message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.weights_message.setVisible(False)
        form.addRow(self.weights_message)
        self.load_button = QPushButton("Load base model")
        self.load_button.setToolTip("Build the network with its weights to see its layers and choose the cut.")
        self.load_button.clicked.connect(self.load_base_model)
        form.addRow(self.load_button)
        self.base_note = QLabel()
        self.base_note.setWordWrap(True)
        form.addRow(self.base_note)
        column.addWidget(base_box)

        head_box = QGroupBox("Head (the new classifier)")
        head_form = QFormLayout(head_box)
        self.pooling_combo = QComboBox()
        self.pooling_combo.addItem("Global average pooling", "avg")
        self.pooling_combo.addItem("Flatten", "flatten")
        self.pooling_combo.setToolTip(
            "How a feature map (height × width × channels) becomes one feature vector. Average pooling keeps one "
            "number per channel and ignores position: few parameters, robust. Flatten keeps every value: many "
            "more parameters, sensitive to where things are."
        )
        self.pooling_combo.activated.connect(lambda _: self._update("head", pooling=self.pooling_combo.currentData()))
        head_form.addRow("Pooling", self.pooling_combo)
        self.batch_norm_check = QCheckBox("Batch normalisation")
        self.batch_norm_check.setToolTip(BATCH_NORM_TIP)
        self.batch_norm_check.toggled.connect(lambda on: self._update("head", batch_norm=bool(on)))
        head_form.addRow(self.batch_norm_check)
        self.hidden_edit = QLineEdit()
        self.hidden_edit.setPlaceholderText("none — e.g. 256, 128")
        self.hidden_edit.setToolTip(
            "Sizes of hidden Dense layers between the features and the output, separated by commas. "
            "Empty: the features go straight to the output layer (a linear classifier), often enough."
        )
        self.hidden_edit.editingFinished.connect(self._on_hidden_edited)
        head_form.addRow("Hidden units", self.hidden_edit)
        self.hidden_message = QLabel()
        self.hidden_message.setWordWrap(True)
        self.hidden_message.setStyleSheet(f"color: {ERROR_COLOUR};")
        self.hidden_message.setVisible(False)
        head_form.addRow(self.hidden_message)
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
        head_form.addRow("Dropout", self.dropout_spin)
        column.addWidget(head_box)

        tune_box = QGroupBox("Fine-tuning (after the head)")
        tune_form = QFormLayout(tune_box)
        self.fine_tune_epochs_spin = QSpinBox()
        self.fine_tune_epochs_spin.setRange(0, 1000)
        self.fine_tune_epochs_spin.setSpecialValueText("off")
        self.fine_tune_epochs_spin.setKeyboardTracking(False)
        self.fine_tune_epochs_spin.setToolTip(
            "Epochs of a second phase that also trains the last layers of the base, at a lower learning rate, "
            "so they adapt to your images. 0 turns fine-tuning off."
        )
        self.fine_tune_epochs_spin.valueChanged.connect(
            lambda v: self._update("training", fine_tune_epochs=int(v))
        )
        tune_form.addRow("Epochs", self.fine_tune_epochs_spin)
        self.fine_tune_layers_spin = QSpinBox()
        self.fine_tune_layers_spin.setRange(1, 200)
        self.fine_tune_layers_spin.setKeyboardTracking(False)
        self.fine_tune_layers_spin.setToolTip("How many of the base's last layers with weights (before the cut) to train.")
        self.fine_tune_layers_spin.valueChanged.connect(
            lambda v: self._update("training", fine_tune_layers=int(v))
        )
        tune_form.addRow("Last layers", self.fine_tune_layers_spin)
        self.fine_tune_from_combo = QComboBox()
        self.fine_tune_from_combo.setToolTip("Or train every layer from this one on (overrides 'Last layers').")
        self.fine_tune_from_combo.activated.connect(self._on_fine_tune_from_chosen)
        tune_form.addRow("Or from layer", self.fine_tune_from_combo)
        self.fine_tune_lr_spin = QDoubleSpinBox()
        self.fine_tune_lr_spin.setRange(0.001, 1.0)
        self.fine_tune_lr_spin.setDecimals(3)
        self.fine_tune_lr_spin.setSingleStep(0.05)
        self.fine_tune_lr_spin.setPrefix("× ")
        self.fine_tune_lr_spin.setKeyboardTracking(False)
        self.fine_tune_lr_spin.setToolTip("The fine-tuning learning rate is the head's learning rate times this.")
        self.fine_tune_lr_spin.valueChanged.connect(
            lambda v: self._update("training", fine_tune_lr_factor=float(v))
        )
        tune_form.addRow("Learning rate", self.fine_tune_lr_spin)
        column.addWidget(tune_box)
        column.addStretch(1)
        return panel

    def _build_middle(self) -> QWidget:
        panel = QWidget()
        column = QVBoxLayout(panel)
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
        self.compare_button.clicked.connect(self.compare_cuts)
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
        self.network_view.cut_selected.connect(self._on_cut_selected)
        column.addWidget(self.network_view, 1)
        self.placeholder = QLabel(
            "No base model loaded yet. Choose a network on the left and press <b>Load base model</b> "
            "to see its layers."
        )
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        column.addWidget(self.placeholder)
        summary_box = QGroupBox("Summary of the model to train")
        summary_column = QVBoxLayout(summary_box)
        self.summary_label = QLabel("—")
        self.summary_label.setObjectName("modelSummary")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        self.summary_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        summary_column.addWidget(self.summary_label)
        column.addWidget(summary_box)
        return panel

    def _build_right(self) -> QWidget:
        panel = QWidget()
        column = QVBoxLayout(panel)
        column.setContentsMargins(4, 0, 0, 0)
        cut_box = QGroupBox("What the cut means")
        cut_column = QVBoxLayout(cut_box)
        self.cut_details = QLabel()
        self.cut_details.setObjectName("cutDetails")
        self.cut_details.setWordWrap(True)
        self.cut_details.setTextFormat(Qt.TextFormat.RichText)
        cut_column.addWidget(self.cut_details)
        self.field_view = ReceptiveFieldView()
        self.field_view.setMinimumSize(220, 220)
        cut_column.addWidget(self.field_view, 1)
        self.field_caption = QLabel()
        self.field_caption.setWordWrap(True)
        cut_column.addWidget(self.field_caption)
        column.addWidget(cut_box, 1)
        return panel

    # ----- recipe ↔ widgets ------------------------------------------------------------------------------------

    def _update(self, section: str | None = None, **changes: Any) -> None:
        """Apply a change to the recipe; a refused value shows the engine's message and the widgets revert."""
        try:
            self.state.update(section, **changes)
        except RecipeError as error:
            self.state.error.emit(error)
            self._sync_from_recipe()

    def _on_recipe_changed(self, _recipe) -> None:
        self._sync_from_recipe()
        self._show_cut()
        self._summary_timer.start()

    def _sync_from_recipe(self) -> None:
        recipe = self.state.recipe
        base = recipe.base
        blockers = [QSignalBlocker(w) for w in (
            self.base_combo, self.weights_combo, self.input_size_spin, self.pooling_combo,
            self.batch_norm_check, self.dropout_spin, self.fine_tune_epochs_spin,
            self.fine_tune_layers_spin, self.fine_tune_from_combo, self.fine_tune_lr_spin,
        )]
        index = next(
            (i for i, (_, name, top) in enumerate(BASE_CHOICES)
             if name == base.name and (top == base.include_top or not base_info(name).has_top_choice)),
            0,
        )
        self.base_combo.setCurrentIndex(index)
        is_file = base.name == "file"
        self.model_file_label.setText(base.model_file or "")
        self._base_form.setRowVisible(self.model_file_label, is_file)
        weights_index = self.weights_combo.findData(base.weights)
        if weights_index < 0:
            self.weights_combo.addItem(f"File: {Path(base.weights).name}", base.weights)
            weights_index = self.weights_combo.count() - 1
        self.weights_combo.setCurrentIndex(weights_index)
        self.weights_combo.setEnabled(not is_file)
        self.input_size_spin.setValue(base.input_size)
        fixed = is_file or (base.include_top and base_info(base.name).has_top_choice)
        self.input_size_spin.setEnabled(not fixed)
        head = recipe.head
        self.pooling_combo.setCurrentIndex(max(0, self.pooling_combo.findData(head.pooling)))
        self.batch_norm_check.setChecked(head.batch_norm)
        if not self.hidden_edit.hasFocus():
            self.hidden_edit.setText(hidden_units_text(head.hidden_units))
        self.dropout_spin.setValue(head.dropout)
        training = recipe.training
        self.fine_tune_epochs_spin.setValue(training.fine_tune_epochs)
        self.fine_tune_layers_spin.setValue(training.fine_tune_layers)
        self.fine_tune_lr_spin.setValue(training.fine_tune_lr_factor)
        self._fill_fine_tune_from()
        tuning = training.fine_tune_epochs > 0
        for widget in (self.fine_tune_layers_spin, self.fine_tune_from_combo, self.fine_tune_lr_spin):
            widget.setEnabled(tuning)
        self.fine_tune_layers_spin.setEnabled(tuning and training.fine_tune_from is None)
        del blockers
        self._refresh_weights_status()
        self._refresh_base_note()

    def _fill_fine_tune_from(self) -> None:
        current = self.state.recipe.training.fine_tune_from
        self.fine_tune_from_combo.clear()
        self.fine_tune_from_combo.addItem("— (use 'Last layers')", None)
        names = [info.layer for info in self._infos.values() if info.params > 0]
        for name in dict.fromkeys(names):
            self.fine_tune_from_combo.addItem(name, name)
        if current is not None and self.fine_tune_from_combo.findData(current) < 0:
            self.fine_tune_from_combo.addItem(current, current)
        self.fine_tune_from_combo.setCurrentIndex(max(0, self.fine_tune_from_combo.findData(current)))

    def _on_fine_tune_from_chosen(self, _index: int) -> None:
        self._update("training", fine_tune_from=self.fine_tune_from_combo.currentData())

    def _on_hidden_edited(self) -> None:
        try:
            units = parse_hidden_units(self.hidden_edit.text())
        except RecipeError as error:
            self.hidden_message.setText(str(error))
            self.hidden_message.setVisible(True)
            return
        self.hidden_message.setVisible(False)
        if units != self.state.recipe.head.hidden_units:
            self._update("head", hidden_units=units)

    def _on_base_chosen(self, index: int) -> None:
        name, top = self.base_combo.itemData(index)
        base = self.state.recipe.base
        if name == "file":
            path, _ = QFileDialog.getOpenFileName(
                self, "Open a Keras model file", str(Path(base.model_file).parent) if base.model_file else "",
                "Keras models (*.keras *.h5);;All files (*)",
            )
            if not path:
                self._sync_from_recipe()
                return
            self._update("base", name="file", model_file=path, include_top=False)
            return
        changes: dict[str, Any] = {"name": name, "include_top": top, "model_file": None}
        if top:
            changes["input_size"] = 224
        if base.weights not in ("imagenet", "none"):
            changes["weights"] = "imagenet"
        self._update("base", **changes)

    def _on_weights_chosen(self, _index: int) -> None:
        self._update("base", weights=self.weights_combo.currentData())

    # ----- weights -----------------------------------------------------------------------------------------------

    def _weights_state(self) -> tuple[str, Any]:
        """("cached"|"bundled"|"missing"|"random"|"file", detail) for the recipe's base and weights."""
        from tlstudio.core.model import backbones

        base = self.state.recipe.base
        if base.name == "file":
            return "file", base.model_file
        if base.weights == "none":
            return "random", None
        if base.weights != "imagenet":
            return "file", base.weights
        status, path = backbones.weights_status(base.name, base.include_top)
        if status == "missing" and base.name in backbones.VGG_BASES:
            return "missing", backbones.weights_file(base.name, base.include_top)
        return status, path

    def _refresh_weights_status(self) -> None:
        busy = self._weights_job is not None
        try:
            status, detail = self._weights_state()
        except UserError as error:
            status, detail = "error", str(error)
        texts = {
            "cached": f"<span style='color:{OK_COLOUR}'>✔</span> ImageNet weights are on this computer.",
            "bundled": f"<span style='color:{OK_COLOUR}'>✔</span> ImageNet weights ship with TL Studio: "
                       "nothing to download.",
            "random": "Random initialisation: nothing to download, but training starts from scratch.",
            "file": f"Weights come from the file {html.escape(str(detail))}.",
        }
        if status == "missing":
            text = (f"ImageNet weights are not on this computer yet: <b>{detail.size_text}</b> to download "
                    f"({html.escape(detail.filename)}), or import the file if you have it.")
        elif status == "error":
            text = f"<span style='color:{ERROR_COLOUR}'>{html.escape(detail)}</span>"
        else:
            text = texts.get(status, html.escape(str(status)))
        self.weights_status.setText(text)
        self.weights_status.setToolTip(str(detail) if status == "cached" else "")
        self.download_button.setVisible(status == "missing")
        self.import_button.setVisible(status in ("missing", "cached"))
        self.download_button.setEnabled(not busy)
        self.import_button.setEnabled(not busy)
        self.cancel_button.setVisible(busy)
        self.weights_progress.setVisible(busy)

    def download_weights(self) -> None:
        """Fetch the official ImageNet weights for the chosen VGG, with progress; Cancel stops it."""
        from tlstudio.core.model import backbones

        base = self.state.recipe.base
        wf = backbones.weights_file(base.name, base.include_top)
        self._start_weights_job(backbones.resolve_weights, wf, busy=f"Downloading {wf.filename}…")

    def _choose_weights_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import a weights file", "", "Keras weights (*.h5);;All files (*)"
        )
        if path:
            self.import_weights_file(path)

    def import_weights_file(self, path: str) -> None:
        """Identify ``path`` by its hash and copy it into the Keras cache (in a worker: files are large)."""
        from tlstudio.core.model import backbones

        def run(source: str, on_event, should_stop):
            return backbones.import_weights(source)

        self._start_weights_job(run, path, busy=f"Checking {Path(path).name}…")

    def _start_weights_job(self, fn, *args: Any, busy: str) -> None:
        self.weights_message.setVisible(False)
        self.weights_progress.setRange(0, 0)
        self.state.busy.emit(busy)
        self._weights_job = workers.run_in_thread(
            fn, *args, on_event=self._on_weights_event, on_done=self._on_weights_done,
            on_error=self._on_weights_error, on_cancel=self._on_weights_cancelled, name="weights",
        )
        self._weights_job.finished.connect(self._on_weights_finished)
        self._refresh_weights_status()

    def _cancel_weights_job(self) -> None:
        if self._weights_job is not None:
            self._weights_job.stop()
        if self._build_job is not None:
            self._build_job.stop()

    def _on_weights_event(self, event: object) -> None:
        if isinstance(event, Progress):
            self._show_progress(event)

    def _show_progress(self, event: Progress) -> None:
        self.weights_progress.setVisible(True)
        if event.total:
            self.weights_progress.setRange(0, 1000)
            self.weights_progress.setValue(int(1000 * event.done / event.total))
            self.weights_progress.setFormat(f"{event.done / 1e6:.1f} of {event.total / 1e6:.1f} MB")
        else:
            self.weights_progress.setRange(0, 0)
        if event.message:
            self.state.busy.emit(event.message)

    def _on_weights_done(self, path: object) -> None:
        self._show_weights_message(f"<span style='color:{OK_COLOUR}'>✔</span> Weights ready: {html.escape(str(path))}")
        self.weights_changed.emit()

    def _on_weights_cancelled(self) -> None:
        self._show_weights_message("Cancelled; nothing was kept.")

    def _on_weights_error(self, error: BaseException) -> None:
        if isinstance(error, WeightsError):
            self._show_weights_message(
                f"<span style='color:{ERROR_COLOUR}'>{html.escape(str(error))}</span>".replace("\n", "<br>")
            )
        else:
            self.state.error.emit(error)

    def _show_weights_message(self, text: str) -> None:
        self.weights_message.setText(text)
        self.weights_message.setVisible(True)

    def _on_weights_finished(self) -> None:
        self._weights_job = None
        self.state.busy.emit("")
        self._refresh_weights_status()

    # ----- base model ------------------------------------------------------------------------------------------

    def load_base_model(self) -> None:
        """Build the recipe's base model in a worker (downloading weights if needed), then show it."""
        from tlstudio.core.model import backbones

        if self._build_job is not None:
            return
        spec = self.state.recipe.base
        self.load_button.setEnabled(False)
        self.load_button.setText("Loading…")
        self.weights_message.setVisible(False)
        self.state.busy.emit(f"Building {self.base_combo.currentText().split(' (')[0]}…")

        def done(model: object) -> None:
            self._built_spec = spec
            self.state.set_base_model(model)
            self.base_built.emit(model)

        self._build_job = workers.run_in_thread(
            backbones.build_base, spec, on_event=self._on_weights_event, on_done=done,
            on_error=self._on_weights_error, on_cancel=self._on_weights_cancelled, name="building the base model",
        )
        self._build_job.finished.connect(self._on_build_finished)
        self.cancel_button.setVisible(True)

    def _on_build_finished(self) -> None:
        self._build_job = None
        self.load_button.setEnabled(True)
        self.load_button.setText("Load base model")
        self.weights_progress.setVisible(False)
        self.state.busy.emit("")
        self._refresh_weights_status()
        self._refresh_base_note()

    def _refresh_base_note(self) -> None:
        model = self.state.base_model
        if model is None:
            self.base_note.setText("")
            return
        stale = self._shown_base is not None and self._shown_base != self.state.recipe.base
        if stale:
            self.base_note.setText(
                f"<span style='color:{ERROR_COLOUR}'>The network shown was built for other settings; "
                "press Load base model to rebuild it.</span>"
            )
        else:
            params = model.count_params()
            self.base_note.setText(f"Loaded: {html.escape(model.name)}, {len(model.layers)} layers, {params:,} parameters.")

    def _on_base_model_changed(self, model) -> None:
        if model is None:
            self._infos = {}
            self._shown_base = None
        else:
            from tlstudio.core.model.tensors import catalogue

            self._shown_base = self._built_spec or self.state.recipe.base
            self._built_spec = None
            try:
                infos = catalogue(model)
            except UserError as error:
                self.state.error.emit(error)
                infos = []
            self._infos = {info.name: info for info in infos}
        self.network_view.set_catalogue(self._infos.values())
        self._completion.setStringList([name for name, info in self._infos.items() if info.cuttable])
        has_model = model is not None
        self.network_view.setVisible(has_model)
        self.placeholder.setVisible(not has_model)
        self.cut_edit.setEnabled(has_model)
        self._update_compare_button()
        blocker = QSignalBlocker(self.fine_tune_from_combo)
        self._fill_fine_tune_from()
        del blocker
        self._refresh_base_note()
        self._show_cut()
        self._summary_timer.start()

    def _on_dataset_changed(self, _dataset) -> None:
        self._update_compare_button()
        self._show_cut()
        self._summary_timer.start()

    def _update_compare_button(self) -> None:
        dataset = self.state.dataset
        reasons = []
        if self.state.base_model is None:
            reasons.append("load a base model")
        if dataset is None or not dataset.train or not dataset.val:
            reasons.append("add images with a validation split on the Data page")
        self.compare_button.setEnabled(not reasons)
        self.compare_button.setToolTip(
            "Fit a quick linear classifier on the features of a few cut tensors and compare their validation "
            "accuracy, to choose the cut before full training."
            + (f" First {' and '.join(reasons)}." if reasons else "")
        )

    def compare_cuts(self) -> CutComparisonDialog:
        """Open the cut comparison dialog (not modal: the page stays usable while it works)."""
        dialog = CutComparisonDialog(self.state, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    # ----- cut tensor ------------------------------------------------------------------------------------------

    def effective_cut(self) -> str | None:
        """The recipe's cut tensor, or the engine's default for the shown model when the recipe has none."""
        if self.state.recipe.cut_tensor:
            return self.state.recipe.cut_tensor
        model = self.state.base_model
        if model is None:
            return None
        from tlstudio.core.model.tensors import default_cut_tensor

        try:
            return default_cut_tensor(model)
        except UserError:
            return None

    def _on_cut_selected(self, name: str) -> None:
        self._update(cut_tensor=name)

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
            self.cut_message.setText(f"<span style='color:{ERROR_COLOUR}'>✖ {html.escape(str(error))}</span>")
            self._show_suggestions(error.suggestions)
            return None
        except UserError as error:
            self.cut_message.setText(f"<span style='color:{ERROR_COLOUR}'>✖ {html.escape(str(error))}</span>")
            return None
        self.cut_message.setText(
            f"<span style='color:{OK_COLOUR}'>✔ {html.escape(info.name)}</span> — {info.layer_type} output, "
            f"{format_shape(info.shape)}"
        )
        return info

    def apply_cut_text(self, text: str) -> bool:
        """Set the cut tensor from a typed name when the engine accepts it; True when it did."""
        self._validate_timer.stop()
        info = self.validate_cut_text(text)
        if info is None:
            return False
        self._update(cut_tensor=info.name)
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

    def _show_cut(self) -> None:
        """Follow the recipe's cut: tree selection, the name field, feature-map size and receptive field."""
        cut = self.effective_cut()
        self.network_view.set_cut(cut if cut in self._infos else None)
        self.network_view.set_fine_tuned(
            self.summary.fine_tuned_layers if self.summary is not None and self._summary_current() else ()
        )
        if cut and not self.cut_edit.hasFocus():
            self.cut_edit.setText(cut)
            if self.state.base_model is not None:
                self.validate_cut_text(cut)
        info = self._infos.get(cut) if cut else None
        input_size = self._input_size()
        self.field_view.set_image(self._sample_image(input_size))
        if info is None:
            self.cut_details.setText("Load a base model and choose a cut tensor." if cut is None else "")
            self.field_view.set_field(input_size, None, None)
            self.field_caption.setText("")
            return
        self.cut_details.setText(self._cut_description(info))
        spatial = len(info.shape) == 4 and info.jump is not None
        cells = info.shape[1] if spatial and info.shape[1] else 0
        self.field_view.set_field(input_size, info.receptive_field, info.jump if spatial else None, cells or 0)
        self.field_caption.setText(self._field_caption(info, input_size))

    def _sample_image(self, input_size: int) -> np.ndarray:
        key = id(self.state.dataset)
        if self._sample is None or self._sample[0] != key:
            self._sample = (key, sample_image(self.state, input_size))
        return self._sample[1]

    def _input_size(self) -> int:
        model = self.state.base_model
        try:
            size = model.inputs[0].shape[1] if model is not None else None
        except (AttributeError, IndexError):
            size = None
        return int(size) if size else self.state.recipe.base.input_size

    def _cut_description(self, info) -> str:
        shape = [d for d in info.shape[1:]]
        values = int(np.prod([d for d in shape if d])) if shape else 0
        lines = [f"<b>{html.escape(info.name)}</b>: the output of the {info.layer_type} layer "
                 f"<i>{html.escape(info.layer)}</i>."]
        if len(shape) == 3:
            height, width, channels = shape
            pooling = self.state.recipe.head.pooling
            lines.append(f"Feature map: <b>{height} × {width} × {channels}</b> ({values:,} values per image).")
            if pooling == "avg":
                lines.append(f"After global average pooling the head gets <b>{channels:,} features</b> "
                             f"(one per channel).")
            else:
                lines.append(f"Flattened, the head gets <b>{values:,} features</b>.")
        else:
            lines.append(f"A vector of <b>{values:,} features</b> per image.")
        return "<br>".join(lines)

    @staticmethod
    def _field_caption(info, input_size: int) -> str:
        field, jump = info.receptive_field, info.jump
        if field is None:
            return "The receptive field of this tensor is unknown (a layer with an unusual effect on positions)."
        if jump is None:
            return "Every value of this tensor depends on the whole image."
        text = (f"Receptive field: each value is computed from a {field} × {field}-pixel patch of the "
                f"{input_size} × {input_size} input (yellow); neighbouring values are {jump} px apart "
                f"(red: one cell).")
        if field > input_size:
            text += " The patch is larger than the image: each value sees all of it, the edges padded with zeros."
        return text + " Click the image to move the patch."

    # ----- live summary -------------------------------------------------------------------------------------

    def _summary_current(self) -> bool:
        return self.summary is not None and self.summary.model is not None

    def refresh_summary(self) -> None:
        """Rebuild the classifier for the current recipe in a worker and show its parameter counts."""
        model = self.state.base_model
        cut = self.effective_cut()
        if model is None or cut is None or cut not in self._infos or not self._infos[cut].cuttable:
            self.summary = None
            self.summary_label.setText("Load a base model and choose a cut tensor to see the model's size.")
            self.network_view.set_fine_tuned(())
            return
        if self._summary_job is not None or any(
            "train" in handle.name for handle in workers.active_workers()
        ):
            self._summary_pending = True
            if self._summary_job is None:
                QTimer.singleShot(1000, self._summary_timer.start)
            return
        from tlstudio.core.model.backbones import preprocessing_mode

        recipe = self.state.recipe
        dataset = self.state.dataset
        num_classes = len(dataset.classes) if dataset is not None and len(dataset.classes) >= 2 else 2
        training = recipe.training
        self._summary_pending = False
        self._summary_job = workers.run_in_thread(
            build_summary, model, cut, num_classes, recipe.head, preprocessing_mode(recipe.base),
            training.fine_tune_epochs, training.fine_tune_layers, training.fine_tune_from,
            on_done=self._on_summary_done, on_error=self._on_summary_error, name="model summary",
        )
        self._summary_job.finished.connect(self._on_summary_finished)

    def _on_summary_done(self, summary: ModelSummary) -> None:
        self.summary = summary
        self.summary_label.setText(self._summary_text(summary))
        self.network_view.set_fine_tuned(summary.fine_tuned_layers)
        self.summary_ready.emit(summary)

    def _on_summary_error(self, error: BaseException) -> None:
        self.summary = None
        if isinstance(error, UserError):
            self.summary_label.setText(f"<span style='color:{ERROR_COLOUR}'>{html.escape(str(error))}</span>")
        else:
            self.state.error.emit(error)

    def _on_summary_finished(self) -> None:
        self._summary_job = None
        if self._summary_pending:
            self._summary_timer.start()

    def _summary_text(self, summary: ModelSummary) -> str:
        training = self.state.recipe.training
        rows = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(kind)}</td>"
            f"<td align='right'>{params:,}</td><td>{html.escape(note)}</td></tr>"
            for name, kind, params, note in summary.head_layers
        )
        bn_stats = " and batch-norm running statistics" if self.state.recipe.head.batch_norm else ""
        classes = "" if self.state.dataset is not None else " (2 classes assumed until images are loaded)"
        text = (
            f"<b>Training the head:</b> {summary.trainable:,} trainable parameters, "
            f"{summary.frozen:,} frozen (the base's weights{bn_stats}){classes}.<br>"
        )
        if training.fine_tune_epochs > 0 and summary.fine_tuned_layers:
            layers = ", ".join(summary.fine_tuned_layers)
            text += (
                f"<b>Fine-tuning</b> ({training.fine_tune_epochs} epochs): {summary.fine_tune_trainable:,} "
                f"trainable, including {html.escape(layers)}.<br>"
            )
        else:
            text += "Fine-tuning is off: the base stays frozen.<br>"
        return text + f"<table cellspacing='4'><tr><th>head layer</th><th>type</th><th>params</th><th></th></tr>{rows}</table>"

    # ----- lifetime -------------------------------------------------------------------------------------------

    def jobs(self) -> list[workers.WorkerHandle]:
        """The workers this page started that are still running."""
        return [job for job in (self._weights_job, self._build_job, self._summary_job) if job is not None]


def _demo() -> None:
    """The page on a tiny VGG-shaped model and generated images."""
    import sys
    import tempfile

    from PySide6.QtWidgets import QApplication

    from tlstudio.core.data.dataset import scan_dataset
    from tlstudio.core.data.samples import make_sample_folders, make_tiny_vgg

    app = QApplication.instance() or QApplication(sys.argv)
    state = ProjectState()
    folder = make_sample_folders(Path(tempfile.mkdtemp()) / "images")
    state.update("base", input_size=32)
    state.update("head", hidden_units=(16,))
    state.update("training", fine_tune_epochs=2, fine_tune_layers=2)
    state.set_dataset(scan_dataset([folder]))
    page = ModelPage(state)
    page.resize(1360, 820)
    page.setWindowTitle("Model page — tiny VGG (demo)")
    state.set_base_model(make_tiny_vgg())
    state.update(cut_tensor="block3_conv3:0")
    page.show()
    if "--screenshot" in sys.argv:
        while page.summary is None:
            app.processEvents()
        for _ in range(5):
            app.processEvents()
        page.grab().save(sys.argv[sys.argv.index("--screenshot") + 1])
        return
    app.exec()


if __name__ == "__main__":
    _demo()
