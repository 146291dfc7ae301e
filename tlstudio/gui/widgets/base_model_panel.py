"""The Model page's "Base model" box: the network, its weights, its input size, and loading it.

It edits ``recipe.base`` of the :class:`~tlstudio.gui.state.ProjectState` it
is given and follows ``base_changed`` and ``base_model_changed``. Weights are
downloaded or imported with progress and Cancel; the base model is built in a
worker and handed to the state. Choosing another network resets the weights
and the cut tensor to that network's defaults (the old cut rarely exists in the
new network), and says so.
"""

from __future__ import annotations

import dataclasses
import html
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from tlstudio.core.spec.bases import base_info, menu_choices
from tlstudio.core.spec.errors import RecipeError, UserError, WeightsError
from tlstudio.core.spec.events import Progress
from tlstudio.core.spec.recipe import BaseSpec
from tlstudio.gui import workers
from tlstudio.gui.state import ProjectState

# (label, BaseSpec.name, include_top)
BASE_CHOICES: tuple[tuple[str, str, bool], ...] = menu_choices()
OFFLINE_BASE = "efficientnet-lite0"
OK_COLOUR = "#2e8b3a"
ERROR_COLOUR = "#c0392b"
RANDOM_WEIGHTS_TEXT = (
    "Random weights: the base has random, untrained features and, while it stays frozen, only the head "
    "learns. Training from scratch would need fine-tuning all layers (and many more images)."
)


def weights_state(base: BaseSpec) -> tuple[str, Any]:
    """("cached"|"bundled"|"missing"|"random"|"file", detail) for a base and its weights."""
    from tlstudio.core.model import backbones

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


class BaseModelPanel(QGroupBox):
    """Network, weights and input size of ``recipe.base``; Load builds the base model in a worker."""

    base_built = Signal(object)
    weights_changed = Signal()
    base_reset = Signal(str)
    """A new network was chosen and the weights and cut were reset: the message saying so."""

    def __init__(self, state: ProjectState, parent: QWidget | None = None) -> None:
        super().__init__("Base model", parent)
        self.state = state
        self.weights_job: workers.WorkerHandle | None = None
        self.build_job: workers.WorkerHandle | None = None
        self._shown_base: BaseSpec | None = None
        self._built_spec: BaseSpec | None = None
        self._build_form()
        state.base_changed.connect(self._sync)
        state.base_model_changed.connect(self._on_base_model_changed)
        self._sync()
        self._on_base_model_changed(state.base_model)

    # ----- layout -----

    def _build_form(self) -> None:
        form = self._form = QFormLayout(self)
        self.base_combo = QComboBox()
        self.base_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        for label, name, top in BASE_CHOICES:
            self.base_combo.addItem(label, (name, top))
        self.base_combo.setToolTip(
            "The pretrained network whose layers extract features from your images. VGG16/VGG19 end at "
            "block5_pool; 'with fc1, fc2' keeps their fully-connected top (224×224 inputs only). "
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
            "Random: untrained features; only useful with fine-tuning of all layers and many images."
        )
        self.weights_combo.activated.connect(lambda _: self._update(weights=self.weights_combo.currentData()))
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
        self.input_size_spin.valueChanged.connect(lambda v: self._update(input_size=int(v)))
        form.addRow("Input size", self.input_size_spin)

        self.weights_status = QLabel()
        self.weights_status.setWordWrap(True)
        self.weights_status.setObjectName("weightsStatus")
        form.addRow(self.weights_status)
        buttons = QHBoxLayout()
        self.download_button = QPushButton("Download…")
        self.download_button.clicked.connect(self.download_weights)
        self.import_button = QPushButton("Import file…")
        self.import_button.setToolTip("Use a weights .h5 file you already have (checked against the official hash).")
        self.import_button.clicked.connect(self._choose_weights_file)
        self.offline_button = QPushButton("Use EfficientNet-Lite0")
        self.offline_button.setToolTip("A fast network whose ImageNet weights ship with TL Studio: nothing to download.")
        self.offline_button.clicked.connect(lambda: self.choose_base(OFFLINE_BASE, False))
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        for button in (self.download_button, self.import_button, self.cancel_button):
            buttons.addWidget(button)
        form.addRow(buttons)
        form.addRow(self.offline_button)
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

    # ----- recipe ↔ widgets -----

    def _update(self, **changes: Any) -> None:
        try:
            self.state.update("base", **changes)
        except RecipeError as error:
            self.state.error.emit(error)
            self._sync()

    def _sync(self, _base: BaseSpec | None = None) -> None:
        base = self.state.recipe.base
        blockers = [QSignalBlocker(w) for w in (self.base_combo, self.weights_combo, self.input_size_spin)]
        index = next(
            (i for i, (_, name, top) in enumerate(BASE_CHOICES)
             if name == base.name and (top == base.include_top or not base_info(name).has_top_choice)),
            0,
        )
        self.base_combo.setCurrentIndex(index)
        is_file = base.name == "file"
        self.model_file_label.setText(base.model_file or "")
        self._form.setRowVisible(self.model_file_label, is_file)
        weights_index = self.weights_combo.findData(base.weights)
        if weights_index < 0:
            self.weights_combo.addItem(f"File: {Path(base.weights).name}", base.weights)
            weights_index = self.weights_combo.count() - 1
        self.weights_combo.setCurrentIndex(weights_index)
        self.weights_combo.setEnabled(not is_file)
        self.input_size_spin.setValue(base.input_size)
        fixed = is_file or (base.include_top and base_info(base.name).has_top_choice)
        self.input_size_spin.setEnabled(not fixed)
        del blockers
        self.refresh_weights_status()
        self._refresh_note()

    def _on_base_chosen(self, index: int) -> None:
        name, top = self.base_combo.itemData(index)
        if name == "file":
            base = self.state.recipe.base
            path, _ = QFileDialog.getOpenFileName(
                self, "Open a Keras model file", str(Path(base.model_file).parent) if base.model_file else "",
                "Keras models (*.keras *.h5);;All files (*)",
            )
            if not path:
                self._sync()
                return
            self.choose_base("file", False, model_file=path)
            return
        self.choose_base(name, top)

    def choose_base(self, name: str, include_top: bool, model_file: str | None = None) -> None:
        """Switch to another network: its default weights and cut, the old base model dropped.

        Keeping "Random" weights or a cut such as ``block5_pool:0`` from VGG would
        make the next step fail on the new network, so both are reset; the
        status line says so.
        """
        old = self.state.recipe
        changes: dict[str, Any] = {"name": name, "include_top": include_top, "model_file": model_file,
                                   "weights": "imagenet"}
        if include_top:
            changes["input_size"] = 224
        try:
            new_base = dataclasses.replace(old.base, **changes)
            if new_base == old.base:
                return
            self.state.set_recipe(old.replace(base=new_base, cut_tensor=None))
        except RecipeError as error:
            self.state.error.emit(error)
            self._sync()
            return
        reset = []
        if old.base.weights != "imagenet" and name != "file":
            reset.append("weights set to ImageNet")
        if old.cut_tensor:
            reset.append(f"cut {old.cut_tensor} replaced by the network's default")
        if self.state.base_model is not None and (old.base.name, old.base.include_top) != (name, include_top):
            self.state.set_base_model(None)
        label = self.base_combo.currentText()
        message = f"Switched to {label}" + (f": {'; '.join(reset)}." if reset else ".")
        self.base_reset.emit(message)

    # ----- weights -----

    def refresh_weights_status(self) -> None:
        """Say where the weights come from, with the buttons that fit (Download…, Import file…)."""
        busy = self.weights_job is not None
        try:
            status, detail = weights_state(self.state.recipe.base)
        except UserError as error:
            status, detail = "error", str(error)
        texts = {
            "cached": f"<span style='color:{OK_COLOUR}'>✔</span> ImageNet weights are on this computer.",
            "bundled": f"<span style='color:{OK_COLOUR}'>✔</span> ImageNet weights ship with TL Studio: "
                       "nothing to download.",
            "random": html.escape(RANDOM_WEIGHTS_TEXT),
            "file": f"Weights come from the file {html.escape(str(detail))}.",
        }
        if status == "missing":
            size = f" ({detail.size_text} to download)" if detail is not None else ""
            text = f"The ImageNet weights are not on this computer{size}."
        elif status == "error":
            text = f"<span style='color:{ERROR_COLOUR}'>{html.escape(detail)}</span>"
        else:
            text = texts.get(status, html.escape(str(status)))
        self.weights_status.setText(text)
        self.weights_status.setToolTip(
            str(detail) if status == "cached" else (f"{detail.filename} from {detail.url}" if status == "missing" and detail else "")
        )
        self.download_button.setVisible(status == "missing" and detail is not None)
        self.import_button.setVisible(status in ("missing", "cached"))
        self.offline_button.setVisible(status == "missing")
        self.download_button.setEnabled(not busy)
        self.import_button.setEnabled(not busy)
        self.cancel_button.setVisible(busy or self.build_job is not None)
        self.weights_progress.setVisible(busy)

    def weights_ready(self) -> bool:
        """True when building the base needs no download."""
        try:
            return weights_state(self.state.recipe.base)[0] != "missing"
        except UserError:
            return False

    def download_weights(self) -> None:
        """Fetch the official ImageNet weights for the chosen VGG, with progress; Cancel stops it."""
        from tlstudio.core.model import backbones

        base = self.state.recipe.base
        wf = backbones.weights_file(base.name, base.include_top)
        self._start_weights_job(backbones.resolve_weights, wf, busy=f"Downloading {wf.filename}…")

    def _choose_weights_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a weights file", "", "Keras weights (*.h5);;All files (*)")
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
        self.weights_job = workers.run_in_thread(
            fn, *args, on_event=self._on_event, on_done=self._on_weights_done, on_error=self._on_error,
            on_cancel=self._on_cancelled, name="weights", kind=workers.JobKind.WEIGHTS,
        )
        self.weights_job.finished.connect(self._on_weights_finished)
        self.refresh_weights_status()

    def cancel(self) -> None:
        """Stop the download, import or build in progress."""
        for job in (self.weights_job, self.build_job):
            if job is not None:
                job.stop()

    def _on_event(self, event: object) -> None:
        if not isinstance(event, Progress):
            return
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
        self.show_message(f"<span style='color:{OK_COLOUR}'>✔</span> Weights ready: {html.escape(str(path))}")
        self.weights_changed.emit()

    def _on_cancelled(self) -> None:
        self.show_message("Cancelled; nothing was kept.")

    def _on_error(self, error: BaseException) -> None:
        if isinstance(error, WeightsError):
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            self.show_message(f"<span style='color:{ERROR_COLOUR}'>{html.escape(first)}</span>")
            self.weights_message.setToolTip(str(error))
        else:
            self.state.error.emit(error)

    def show_message(self, text: str) -> None:
        """Rich text under the weights buttons: the outcome of the last download, import, build or reset."""
        self.weights_message.setText(text)
        self.weights_message.setVisible(True)

    def _on_weights_finished(self) -> None:
        self.weights_job = None
        self.state.busy.emit("")
        self.refresh_weights_status()

    # ----- base model -----

    def load_base_model(self) -> None:
        """Build the recipe's base model in a worker (downloading weights if needed), then show it."""
        from tlstudio.core.model import backbones

        if self.build_job is not None:
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

        self.build_job = workers.run_in_thread(
            backbones.build_base, spec, on_event=self._on_event, on_done=done, on_error=self._on_error,
            on_cancel=self._on_cancelled, name="building the base model", kind=workers.JobKind.BASE_MODEL,
        )
        self.build_job.finished.connect(self._on_build_finished)
        self.cancel_button.setVisible(True)

    def _on_build_finished(self) -> None:
        self.build_job = None
        self.load_button.setEnabled(True)
        self.load_button.setText("Load base model")
        self.weights_progress.setVisible(False)
        self.state.busy.emit("")
        self.refresh_weights_status()
        self._refresh_note()

    def _on_base_model_changed(self, model) -> None:
        self._shown_base = None if model is None else (self._built_spec or self.state.recipe.base)
        self._built_spec = None
        self._refresh_note()

    def _refresh_note(self) -> None:
        model = self.state.base_model
        if model is None:
            self.base_note.setText("")
            return
        if self._shown_base is not None and self._shown_base != self.state.recipe.base:
            self.base_note.setText(
                f"<span style='color:{ERROR_COLOUR}'>The network shown was built for other settings; "
                "press Load base model to rebuild it.</span>"
            )
        else:
            params = model.count_params()
            self.base_note.setText(f"Loaded: {html.escape(model.name)}, {len(model.layers)} layers, {params:,} parameters.")

    def jobs(self) -> list[workers.WorkerHandle]:
        return [job for job in (self.weights_job, self.build_job) if job is not None]
