"""The Train page: settings, Start / Pause / Resume / Stop, and live curves.

Training is the engine's ``core.training.train`` running in a worker thread.
Its events drive the curves (:class:`~tlstudio.gui.widgets.loss_plot.LossPlot`),
the progress bar and the message log. The engine has no pause: pausing makes
the ``should_stop`` callback it calls after every batch wait on a
``threading.Event`` until Resume or Stop, so the worker simply blocks between
two batches. Stop lets the engine end the run its own way: it keeps the best
weights so far and returns a result marked ``cancelled``.
"""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QSignalBlocker, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from tlstudio.core.spec.errors import DataError, RecipeError, WeightsError
from tlstudio.core.spec.recipe import BaseSpec
from tlstudio.core.spec.events import BatchEnded, EpochEnded, Message, PhaseStarted, Progress
from tlstudio.core.spec.text import counted, duration_text
from tlstudio.gui import workers
from tlstudio.gui.health_panel import open_dialog
from tlstudio.gui.lr_finder_dialog import LrFinderDialog
from tlstudio.gui.errors import first_sentence, show_error
from tlstudio.gui.state import ProjectState
from tlstudio.gui.widgets.loss_plot import LossPlot

STATUS_INTERVAL_MS = 100
"""The progress bar and status line follow the latest event at most this often, not on every event."""


@dataclass(frozen=True)
class WorkerPaused:
    """Sent by the paused ``should_stop`` callback once the worker is actually waiting."""


def run_training(
    recipe, dataset, base_model, stop_flag: threading.Event, resume_flag: threading.Event, on_event, should_stop
):
    """``core.training.train`` with a pause: the stop check blocks while ``resume_flag`` is clear.

    Runs in the worker thread. ``stop_flag`` asks for a stop that keeps the best
    weights (the result comes back, marked cancelled); ``should_stop`` is the
    worker's own flag (set when the window closes).
    """
    from tlstudio.core.train import training

    def check() -> bool:
        if not resume_flag.is_set() and not stop_flag.is_set():
            on_event(WorkerPaused())
            while not resume_flag.wait(0.1):
                if stop_flag.is_set() or should_stop():
                    break
        return stop_flag.is_set() or should_stop()

    # A full garbage collection walks every object TensorFlow and Keras hold (about a million):
    # ~200 ms in the worker with the interpreter lock held, during which the window cannot repaint.
    # Tracing the step functions makes enough garbage to trigger one. Freezing the objects that
    # exist now (a constant-time move to a generation the collector skips) keeps collections during
    # training to the objects made since; they go back to the collector when training ends.
    gc.freeze()
    try:
        return training.train(recipe, dataset=dataset, base_model=base_model, on_event=on_event,
                              should_stop=check)
    finally:
        gc.unfreeze()


def detect_device(on_event=None, should_stop=None) -> str:
    """The engine's one-line device badge (imports TensorFlow, so it runs in a worker)."""
    from tlstudio.core.train.devices import device_badge

    return device_badge()


def device_label(badge: str) -> tuple[str, str]:
    """The engine's badge as (short label, reason): ``"CPU — no GPU found"`` and why, or the GPU as it is."""
    if badge.startswith("CPU"):
        reason = badge.partition("—")[2].strip()
        return "CPU — no GPU found", reason
    return badge, ""


def finished_label(result) -> str:
    """The full progress bar's text once training has ended: how it ended and the epoch whose weights were kept."""
    if result.cancelled:
        how = "Stopped"
    elif result.stopped_early:
        how = "Stopped early"
    else:
        how = "Finished"
    return f"{how} — kept epoch {result.best_epoch}"


class TrainPage(QWidget):
    """Training settings and a live view of the running training."""

    started = Signal()
    paused = Signal()
    resumed = Signal()
    finished = Signal(object)

    def __init__(self, state: ProjectState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.job: workers.WorkerHandle | None = None
        self.result: Any = None
        self._stop_flag = threading.Event()
        self._resume_flag = threading.Event()
        self._resume_flag.set()
        self._phase: PhaseStarted | None = None
        self._epochs_before_phase = 0
        self._total_epochs = 0
        self._latest: BatchEnded | None = None
        self._batch_count = 0
        self._status_dirty = False
        self._latest_progress: Progress | None = None

        self.badge = QLabel("Detecting device…")
        self.badge.setObjectName("deviceBadge")
        self.badge.setToolTip("Where training runs. A GPU trains many times faster than the CPU.")
        self.badge.setStyleSheet(
            "QLabel#deviceBadge { border: 1px solid palette(mid); border-radius: 9px; padding: 2px 10px; }"
        )

        self.plot = LossPlot()
        self.start_button = QPushButton("Start")
        self.start_button.setObjectName("startTraining")
        self.start_button.setToolTip("Train the head on your images with these settings (Ctrl+Return).")
        self.start_button.setShortcut("Ctrl+Return")
        self.start_button.clicked.connect(self.start)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Pause after the current batch; Resume continues where it stopped.")
        self.pause_button.clicked.connect(self._toggle_pause)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("End training after the current batch, keeping the best weights so far.")
        self.stop_button.clicked.connect(self.stop)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setFormat("Not started")
        self.progress.setValue(0)
        self.status_label = QLabel("Set up the data and the model, then press Start.")
        self.status_label.setObjectName("trainStatus")
        self.status_label.setWordWrap(True)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(500)
        self.log.setPlaceholderText("Messages from training appear here.")

        top = QHBoxLayout()
        top.addWidget(QLabel("<b>Device</b>"))
        top.addWidget(self.badge)
        top.addStretch(1)
        controls = QHBoxLayout()
        for button in (self.start_button, self.pause_button, self.stop_button):
            controls.addWidget(button)
        controls.addWidget(self.progress, 1)

        right = QWidget()
        right_column = QVBoxLayout(right)
        right_column.setContentsMargins(0, 0, 0, 0)
        right_column.addLayout(controls)
        right_column.addWidget(self.status_label)
        plots_and_log = QSplitter(Qt.Orientation.Vertical)
        plots_and_log.addWidget(self.plot)
        plots_and_log.addWidget(self.log)
        plots_and_log.setStretchFactor(0, 4)
        plots_and_log.setStretchFactor(1, 1)
        plots_and_log.setSizes([520, 110])
        right_column.addWidget(plots_and_log, 1)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self._build_settings())
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([300, 900])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(top)
        layout.addWidget(splitter, 1)

        self._status_timer = QTimer(self)
        self._status_timer.setInterval(STATUS_INTERVAL_MS)
        self._status_timer.timeout.connect(self._refresh_status)
        self._status_timer.start()

        state.training_changed.connect(lambda _: self._sync_from_recipe())
        self._sync_from_recipe()
        self._set_running(False)
        self._badge_job: workers.WorkerHandle | None = None
        state.tensorflow_ready_changed.connect(self._on_tensorflow_ready)
        self._on_tensorflow_ready(state.tensorflow_ready)

    # ----- settings ---------------------------------------------------------------------------------------------

    def _build_settings(self) -> QWidget:
        box = QGroupBox("Training settings")
        form = QFormLayout(box)
        self.epochs_spin = self._spin(1, 1000, "epochs", "Passes over all training images for the head. "
                                      "Early stopping may end sooner.")
        form.addRow("Epochs", self.epochs_spin)
        self.batch_spin = self._spin(1, 1024, "batch_size", "Images per optimisation step. Larger is faster per "
                                     "image but needs more memory; 32 suits most cases.")
        form.addRow("Batch size", self.batch_spin)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(0.00001, 1.0)
        self.lr_spin.setSingleStep(0.0001)
        self.lr_spin.setKeyboardTracking(False)
        self.lr_spin.setToolTip("How big each step is. 0.001 suits Adam; too large makes the loss jump or become NaN.")
        self.lr_spin.valueChanged.connect(lambda v: self._update(learning_rate=float(v)))
        self.lr_find_button = QPushButton("Find…")
        self.lr_find_button.setToolTip("Sweep the learning rate of the head on cached features and suggest one")
        self.lr_find_button.clicked.connect(lambda: open_dialog(LrFinderDialog(self.state, self)))
        lr_row = QHBoxLayout()
        lr_row.addWidget(self.lr_spin, 1)
        lr_row.addWidget(self.lr_find_button)
        form.addRow("Learning rate", lr_row)
        self.optimizer_combo = QComboBox()
        self.optimizer_combo.addItem("Adam", "adam")
        self.optimizer_combo.addItem("SGD with momentum", "sgd")
        self.optimizer_combo.setToolTip("Adam adapts the step per weight and needs little tuning; SGD with "
                                        "momentum is simpler and sometimes generalises better.")
        self.optimizer_combo.activated.connect(lambda _: self._update(optimizer=self.optimizer_combo.currentData()))
        form.addRow("Optimizer", self.optimizer_combo)
        self.momentum_spin = QDoubleSpinBox()
        self.momentum_spin.setRange(0.0, 0.99)
        self.momentum_spin.setSingleStep(0.05)
        self.momentum_spin.setKeyboardTracking(False)
        self.momentum_spin.setToolTip("SGD only: how much of the previous step carries into the next.")
        self.momentum_spin.valueChanged.connect(lambda v: self._update(momentum=float(v)))
        form.addRow("Momentum", self.momentum_spin)
        self.cosine_check = self._check("cosine_decay", "Cosine learning-rate decay",
                                        "Lower the learning rate smoothly to zero over the epochs: "
                                        "big steps early, fine steps at the end.")
        form.addRow(self.cosine_check)
        self.patience_spin = self._spin(0, 100, "early_stopping_patience",
                                        "Stop when the validation loss has not improved for this many epochs "
                                        "and keep the best weights. 0 turns early stopping off.")
        self.patience_spin.setSpecialValueText("off")
        form.addRow("Early stopping", self.patience_spin)
        self.augment_check = self._check("augmentation", "Augmentation (flips, small rotations, zoom, contrast)",
                                         "Show slightly changed copies of the training images each epoch, so the "
                                         "model learns what does not matter. Slower: the base runs every epoch.")
        form.addRow(self.augment_check)
        self.class_weights_check = self._check("class_weights", "Balance classes (class weights)",
                                               "Weigh the loss so a class with few images counts as much as a "
                                               "class with many.")
        form.addRow(self.class_weights_check)
        self.finalize_check = self._check(
            "finalize_batch_norm", "Finalise batch norm on the whole training set",
            "After training, recompute the head's batch-norm mean and variance over all training images "
            "(no augmentation) instead of keeping the running averages of the last batches.",
        )
        form.addRow(self.finalize_check)
        self.fine_tune_note = QLabel()
        self.fine_tune_note.setWordWrap(True)
        form.addRow(self.fine_tune_note)
        self.settings_box = box
        return box

    def _spin(self, low: int, high: int, field: str, tip: str) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(low, high)
        spin.setKeyboardTracking(False)
        spin.setToolTip(tip)
        spin.valueChanged.connect(lambda v: self._update(**{field: int(v)}))
        return spin

    def _check(self, field: str, text: str, tip: str) -> QCheckBox:
        check = QCheckBox(text)
        check.setToolTip(tip)
        check.toggled.connect(lambda on: self._update(**{field: bool(on)}))
        return check

    def _update(self, **changes: Any) -> None:
        try:
            self.state.update("training", **changes)
        except RecipeError as error:
            self.state.error.emit(error)
            self._sync_from_recipe()

    def _sync_from_recipe(self) -> None:
        spec = self.state.recipe.training
        widgets = (self.epochs_spin, self.batch_spin, self.lr_spin, self.optimizer_combo, self.momentum_spin,
                   self.cosine_check, self.patience_spin, self.augment_check, self.class_weights_check,
                   self.finalize_check)
        blockers = [QSignalBlocker(w) for w in widgets]
        self.epochs_spin.setValue(spec.epochs)
        self.batch_spin.setValue(spec.batch_size)
        self.lr_spin.setValue(spec.learning_rate)
        self.optimizer_combo.setCurrentIndex(max(0, self.optimizer_combo.findData(spec.optimizer)))
        self.momentum_spin.setValue(spec.momentum)
        self.momentum_spin.setEnabled(spec.optimizer == "sgd")
        self.cosine_check.setChecked(spec.cosine_decay)
        self.patience_spin.setValue(spec.early_stopping_patience)
        self.augment_check.setChecked(spec.augmentation)
        self.class_weights_check.setChecked(spec.class_weights)
        self.finalize_check.setChecked(spec.finalize_batch_norm)
        del blockers
        if spec.fine_tune_epochs:
            depth = f"from {spec.fine_tune_from}" if spec.fine_tune_from else f"the last {spec.fine_tune_layers} layers"
            self.fine_tune_note.setText(
                f"Then fine-tuning: {spec.fine_tune_epochs} epochs of {depth} at ×{spec.fine_tune_lr_factor:g} "
                "the learning rate (set on the Model page)."
            )
        else:
            self.fine_tune_note.setText("Fine-tuning is off (turn it on on the Model page).")

    def _on_tensorflow_ready(self, ready: bool) -> None:
        """Ask the engine for the device once TensorFlow has loaded (never two imports of it at once)."""
        if ready and self._badge_job is None:
            self._badge_job = workers.run_in_thread(
                detect_device, on_done=self.show_device, on_error=self._on_badge_error, name="device detection",
                kind=workers.JobKind.DEVICES,
            )

    def show_device(self, badge: str) -> None:
        """A short label ("CPU — no GPU found"); the engine's reason goes in the tooltip."""
        label, reason = device_label(badge)
        self.badge.setText(label)
        self.badge.setToolTip(
            (f"{reason}\n" if reason else "") + "Help ▸ GPU Doctor says which devices TensorFlow sees and why."
        )

    def _on_badge_error(self, error: BaseException) -> None:
        self.badge.setText(f"Device unknown: {error}")

    # ----- running ---------------------------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self.job is not None

    def is_paused(self) -> bool:
        return self.is_running() and not self._resume_flag.is_set()

    def start(self) -> None:
        """Start ``core.training.train`` on the project's recipe, dataset and base model."""
        if self.is_running():
            return
        recipe = self.state.recipe
        dataset = self.state.dataset
        if dataset is None and not recipe.data.folders:
            self.state.error.emit(DataError(
                "There are no images to train on yet. Add image folders on the Data page, then press Start."
            ))
            return
        self.plot.clear()
        self.log.clear()
        self._latest_progress = None
        self.result = None
        self._phase = None
        self._latest = None
        self._batch_count = 0
        self._epochs_before_phase = 0
        self._total_epochs = recipe.training.epochs + recipe.training.fine_tune_epochs
        self.plot.set_planned_epochs(self._total_epochs)
        self._stop_flag = threading.Event()
        self._resume_flag = threading.Event()
        self._resume_flag.set()
        self.progress.setRange(0, 0)
        self.progress.setFormat("Preparing…")
        self.status_label.setText("Preparing the images and the model…")
        self.job = workers.run_in_thread(
            run_training, recipe, dataset, self.state.base_model, self._stop_flag, self._resume_flag,
            on_event=self._on_event, on_done=self._on_done, on_error=self._on_error,
            on_cancel=self._on_cancelled, name="training", kind=workers.JobKind.TRAINING,
        )
        self.job.finished.connect(self._on_finished)
        self._set_running(True)
        self.state.busy.emit("Training…")
        self.started.emit()

    def request_pause(self) -> None:
        """Ask the worker to wait after the current batch (thread-safe: only sets a flag)."""
        self._resume_flag.clear()

    def pause(self) -> None:
        if not self.is_running() or self.is_paused():
            return
        self.request_pause()
        self.pause_button.setText("Resume")
        self.status_label.setText("Pausing after the current batch…")

    def resume(self) -> None:
        if not self.is_paused():
            return
        self._resume_flag.set()
        self.pause_button.setText("Pause")
        self.status_label.setText("Training…")
        self.state.busy.emit("Training…")
        self.resumed.emit()

    def _toggle_pause(self) -> None:
        if self.is_paused():
            self.resume()
        else:
            self.pause()

    def stop(self) -> None:
        """End training after the current batch; the engine keeps the best weights so far."""
        if not self.is_running():
            return
        self._stop_flag.set()
        self._resume_flag.set()
        self.stop_button.setEnabled(False)
        self.pause_button.setEnabled(False)
        self.status_label.setText("Stopping after the current batch, keeping the best weights so far…")

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.pause_button.setEnabled(running)
        self.stop_button.setEnabled(running)
        self.pause_button.setText("Pause")
        self.settings_box.setEnabled(not running)

    def _on_event(self, event: object) -> None:
        if isinstance(event, BatchEnded):
            self._latest = event
            self._batch_count += 1
            self._status_dirty = True
            self.plot.add_event(event)
        elif isinstance(event, EpochEnded):
            self.plot.add_event(event)
            self._log_epoch(event)
        elif isinstance(event, PhaseStarted):
            if self._phase is not None:
                self._epochs_before_phase += self._phase_epochs_done
            self._phase = event
            self._phase_epochs_done = 0
            self.plot.add_event(event)
            what = "Fine-tuning the base and the head" if event.name == "fine-tune" else "Training the head"
            self.log.appendPlainText(f"{what}: {counted(event.epochs, 'epoch')} of {counted(event.steps_per_epoch, 'step')}, "
                                     f"learning rate {event.learning_rate:g}.")
            self.progress.setRange(0, max(1, self._total_epochs * event.steps_per_epoch))
        elif isinstance(event, Message):
            self.log.appendPlainText(event.text)
        elif isinstance(event, Progress):
            self._latest_progress = event
        elif isinstance(event, WorkerPaused):
            self.pause_button.setText("Resume")
            self.status_label.setText("Paused. Press Resume to continue or Stop to end, keeping the best weights.")
            self.state.busy.emit("Training paused")
            self.paused.emit()

    def _log_epoch(self, event: EpochEnded) -> None:
        self._phase_epochs_done = getattr(self, "_phase_epochs_done", 0) + 1
        metrics = event.metrics
        parts = [f"{key.replace('_', ' ')} {metrics[key]:.4f}"
                 for key in ("loss", "accuracy", "val_loss", "val_accuracy") if key in metrics]
        self.log.appendPlainText(f"Epoch {event.epoch} ({event.phase}): " + ", ".join(parts))

    def _refresh_status(self) -> None:
        """Update the progress bar from the latest progress report or batch, at most ten times a second."""
        progress, self._latest_progress = self._latest_progress, None
        if progress is not None:
            if progress.total:
                self.progress.setRange(0, progress.total)
                self.progress.setValue(progress.done)
            self.progress.setFormat(f"{progress.message or progress.task} — {progress.done}/{progress.total or '?'}")
        if not self._status_dirty or self._latest is None or self._phase is None:
            return
        self._status_dirty = False
        event = self._latest
        steps = self._phase.steps_per_epoch
        epoch = self._epochs_before_phase + event.epoch
        self.progress.setRange(0, max(1, self._total_epochs * steps))
        self.progress.setValue(min(self.progress.maximum(), event.step + 1))
        phase = "fine-tune" if event.phase == "fine-tune" else "head"
        self.progress.setFormat(
            f"Epoch {epoch}/{self._total_epochs} ({phase}) · step {event.batch + 1}/{steps} · "
            f"{event.images_per_second:,.0f} img/s · ETA {duration_text(event.eta_seconds, unknown='…')}"
        )
        if not self.is_paused() and not self._stop_flag.is_set():
            self.status_label.setText(f"Training… batch loss {event.loss:.4f}, learning rate {event.learning_rate:.2e}")

    def _settle_status(self) -> None:
        """Show the last batch's progress now, so no later refresh overwrites the final message."""
        self._refresh_status()
        self._status_dirty = False

    def _on_done(self, result: Any) -> None:
        self._settle_status()
        self.result = result
        self.state.set_last_run(result)
        accuracy = result.metrics.get("val_accuracy")
        score = f"validation accuracy {accuracy:.1%}" if accuracy is not None else "no validation score"
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.setFormat(finished_label(result))
        if result.best_epoch:
            self.plot.mark_best(result.best_epoch)
        if result.cancelled:
            text = f"Stopped: kept the best weights so far (epoch {result.best_epoch}), {score}."
        elif result.stopped_early:
            text = f"Finished early (no improvement): best epoch {result.best_epoch}, {score}."
        else:
            text = f"Finished: best epoch {result.best_epoch}, {score}."
        self.status_label.setText(f"{text} Run saved in {result.run_dir}.")

    def _on_cancelled(self) -> None:
        self._settle_status()
        self.status_label.setText("Stopped before the first epoch ended: nothing was saved.")

    def _on_error(self, error: BaseException) -> None:
        self._settle_status()
        self.status_label.setText(f"Training failed: {first_sentence(str(error) or type(error).__name__)}")
        if isinstance(error, WeightsError) and self.state.recipe.base.name != "efficientnet-lite0":
            show_error(self, error, actions=[("Use EfficientNet-Lite0", self.use_offline_base)])
        else:
            self.state.error.emit(error)

    def use_offline_base(self) -> None:
        """Switch to EfficientNet-Lite0, whose weights ship with TL Studio, with its default cut."""
        base = self.state.recipe.base
        self.state.set_recipe(self.state.recipe.replace(
            base=BaseSpec(name="efficientnet-lite0", input_size=base.input_size), cut_tensor=None))
        self.state.set_base_model(None)
        self.status_label.setText("Switched to EfficientNet-Lite0 (weights included). Press Start to train.")

    def _on_finished(self) -> None:
        self.job = None
        self._refresh_status()
        self.plot.flush()
        self._set_running(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat("Not started")
        self.state.busy.emit("")
        self.finished.emit(self.result)


def _demo() -> None:
    """Train a tiny VGG on generated images, live (runs go to a temporary folder)."""
    import os
    import sys
    import tempfile
    from pathlib import Path

    from PySide6.QtWidgets import QApplication

    from tlstudio.core.data.dataset import scan_dataset
    from tlstudio.core.data.samples import make_sample_folders, make_tiny_vgg

    os.environ.setdefault("TLSTUDIO_HOME", tempfile.mkdtemp(prefix="tlstudio-demo-"))
    app = QApplication.instance() or QApplication(sys.argv)
    state = ProjectState()
    folder = make_sample_folders(Path(tempfile.mkdtemp()) / "images", per_class=20)
    state.update("base", input_size=32)
    state.update("training", epochs=6, batch_size=4, fine_tune_epochs=2, early_stopping_patience=0,
                 cosine_decay=True)
    state.set_dataset(scan_dataset([folder]))
    state.set_base_model(make_tiny_vgg())
    state.set_tensorflow_ready(True)
    page = TrainPage(state)
    page.resize(1280, 760)
    page.setWindowTitle("Train page — tiny VGG on generated images (demo)")
    page.show()
    page.start()
    if "--screenshot" in sys.argv:
        while page.is_running() or not page._badge_job.is_finished():
            app.processEvents()
        for _ in range(5):
            app.processEvents()
        page.grab().save(sys.argv[sys.argv.index("--screenshot") + 1])
        return
    app.exec()


if __name__ == "__main__":
    _demo()
