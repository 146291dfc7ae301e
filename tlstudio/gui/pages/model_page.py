"""The Model page: choose the base model, where to cut it, and the new head.

The page puts together widgets that each edit one part of the
:class:`~tlstudio.gui.state.ProjectState`: left, the base model and its
weights (:class:`~tlstudio.gui.widgets.base_model_panel.BaseModelPanel`) and
the head and fine-tuning forms (:class:`~tlstudio.gui.widgets.head_form.HeadForm`);
middle, the cut tensor and the network (:class:`~tlstudio.gui.widgets.cut_panel.CutPanel`);
right, what the cut means (:class:`~tlstudio.gui.widgets.cut_details.CutDetails`).
Below the network, a live summary of trainable and frozen parameters, built
with the engine's own ``build_classifier`` off the GUI thread.

When the project is new and the VGG16 weights are not on the computer, the
page starts on EfficientNet-Lite0 (weights included), and it loads the base
model by itself once images are in, so Start works after a drop.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QGroupBox, QLabel, QScrollArea, QSizePolicy, QSplitter, QVBoxLayout, QWidget

from tlstudio.core.spec.errors import UserError
from tlstudio.core.spec.hidden_units import parse_hidden_units
from tlstudio.core.model.summary import ModelSummary, build_summary
from tlstudio.core.spec.recipe import BaseSpec
from tlstudio.gui import workers
from tlstudio.gui.cut_comparison_dialog import CutComparisonDialog
from tlstudio.gui.state import ProjectState
from tlstudio.gui.widgets.base_model_panel import OFFLINE_BASE, BaseModelPanel, weights_state
from tlstudio.gui.widgets.cut_details import CutDetails
from tlstudio.gui.widgets.cut_panel import CutPanel
from tlstudio.gui.widgets.head_form import HeadForm

SUMMARY_DELAY_MS = 250
ERROR_COLOUR = "#c0392b"


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
        self._sample: tuple[int, np.ndarray] | None = None
        self._summary_job: workers.WorkerHandle | None = None
        self._summary_pending = False
        self._summary_timer = QTimer(self, singleShot=True, interval=SUMMARY_DELAY_MS)
        self._summary_timer.timeout.connect(self.refresh_summary)
        start_offline(state)

        self.base_panel = BaseModelPanel(state)
        self.base_panel.base_built.connect(self.base_built)
        self.base_panel.weights_changed.connect(self.weights_changed)
        self.base_panel.base_reset.connect(self._show_reset)
        self.head_form = HeadForm(state, parse_hidden_units)
        self.cut_panel = CutPanel(state)
        self.cut_panel.compare_requested.connect(self.compare_cuts)
        self.cut_info = CutDetails()
        # The controls tests and the screenshots reach, by their old names.
        self.network_view = self.cut_panel.network_view
        self.cut_edit = self.cut_panel.cut_edit
        self.cut_message = self.cut_panel.cut_message
        self.compare_button = self.cut_panel.compare_button
        self.tune_button = self.cut_panel.tune_button
        self.cut_details = self.cut_info.details
        self.field_view = self.cut_info.field_view
        self.batch_norm_check = self.head_form.batch_norm_check

        left = QWidget()
        column = QVBoxLayout(left)
        column.setContentsMargins(0, 0, 4, 0)
        column.addWidget(self.base_panel)
        column.addWidget(self.head_form)
        column.addStretch(1)
        middle = QWidget()
        middle_column = QVBoxLayout(middle)
        middle_column.setContentsMargins(0, 0, 0, 0)
        middle_column.addWidget(self.cut_panel, 1)
        middle_column.addWidget(self._build_summary_box())
        right = QWidget()
        right_column = QVBoxLayout(right)
        right_column.setContentsMargins(4, 0, 0, 0)
        right_column.addWidget(self.cut_info, 1)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(_scrolling(left))
        splitter.addWidget(middle)
        splitter.addWidget(_scrolling(right))
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setStretchFactor(2, 0)
        splitter.setSizes([300, 700, 260])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(splitter)

        for signal in (state.cut_changed, state.head_changed, state.training_changed, state.base_changed):
            signal.connect(self._on_recipe_part_changed)
        state.base_model_changed.connect(self._on_base_model_changed)
        state.dataset_changed.connect(self._on_dataset_changed)
        self._on_base_model_changed(state.base_model)

    def _build_summary_box(self) -> QGroupBox:
        box = QGroupBox("Summary of the model to train")
        column = QVBoxLayout(box)
        self.summary_label = QLabel("—")
        self.summary_label.setObjectName("modelSummary")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        self.summary_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        column.addWidget(self.summary_label)
        return box

    # ----- following the state -----

    def _on_recipe_part_changed(self, _value: object) -> None:
        self._show_cut()
        self._summary_timer.start()

    def _show_reset(self, text: str) -> None:
        """Say what changed with the network (also in the status bar), then load it when that needs nothing."""
        self.base_panel.show_message(html.escape(text, quote=False))
        window = self.window()
        bar = window.statusBar() if hasattr(window, "statusBar") else None
        if bar is not None:
            bar.showMessage(text, 8000)
        self.maybe_load_base()

    def _on_base_model_changed(self, model) -> None:
        if model is None:
            self._infos = {}
        else:
            from tlstudio.core.model.tensors import catalogue

            try:
                infos = catalogue(model)
            except UserError as error:
                self.state.error.emit(error)
                infos = []
            self._infos = {info.name: info for info in infos}
        self.cut_panel.set_catalogue(self._infos)
        self.head_form.set_layers(info.layer for info in self._infos.values() if info.params > 0)
        self._update_compare_button()
        self._show_cut()
        self._summary_timer.start()

    def _on_dataset_changed(self, _dataset) -> None:
        self._update_compare_button()
        self._show_cut()
        self._summary_timer.start()
        self.maybe_load_base()

    def maybe_load_base(self) -> bool:
        """Load the base model by itself when images are in and nothing needs downloading; True when started."""
        dataset = self.state.dataset
        if (self.state.base_model is not None or dataset is None or not dataset.train
                or not self.state.tensorflow_ready or self.base_panel.build_job is not None
                or not self.base_panel.weights_ready()):
            return False
        self.load_base_model()
        return True

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

    # ----- base model (the panel does the work) -----

    def load_base_model(self) -> None:
        """Build the recipe's base model in a worker, then show it."""
        self.base_panel.load_base_model()

    def effective_cut(self) -> str | None:
        """The recipe's cut tensor, or the engine's default for the shown model when the recipe has none."""
        return self.cut_panel.effective_cut()

    def suggestion_buttons(self):
        return self.cut_panel.suggestion_buttons()

    def apply_cut_text(self, text: str) -> bool:
        return self.cut_panel.apply_cut_text(text)

    # ----- cut tensor -----

    def _show_cut(self) -> None:
        """Follow the recipe's cut: the network view, the name field and what the cut means."""
        fine_tuned = self.summary.fine_tuned_layers if self._summary_current() else ()
        self.cut_panel.show_cut(fine_tuned)
        cut = self.effective_cut()
        info = self._infos.get(cut) if cut else None
        input_size = self._input_size()
        self.cut_info.show_tensor(
            info, input_size, self._sample_image(input_size), self.state.recipe.head.pooling,
            "Load a base model and choose a cut tensor." if cut is None else "",
        )

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

    # ----- live summary -----

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
        if self._summary_job is not None or workers.running(workers.JobKind.TRAINING):
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
            kind=workers.JobKind.SUMMARY,
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

    # ----- lifetime -----

    def jobs(self) -> list[workers.WorkerHandle]:
        """The workers this page started that are still running."""
        return self.base_panel.jobs() + ([self._summary_job] if self._summary_job is not None else [])


def start_offline(state: ProjectState) -> None:
    """A new, untouched project whose VGG16 weights are not on this computer starts on EfficientNet-Lite0.

    Its weights ship with TL Studio, so the first training needs no download
    and no decision; the project is not marked as changed.
    """
    if state.path is not None or state.dirty or state.recipe.base != BaseSpec():
        return
    try:
        missing = weights_state(state.recipe.base)[0] == "missing"
    except UserError:
        return
    if missing:
        state.set_starting_recipe(state.recipe.replace(base=BaseSpec(name=OFFLINE_BASE)))


def _scrolling(widget: QWidget) -> QScrollArea:
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setMinimumWidth(widget.minimumSizeHint().width() + 12)
    return area


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
