"""Training a recipe: the head on a frozen base, then optional fine-tuning.

``train`` runs one recipe and writes a run folder (see :mod:`tlstudio.core.train.runs`).

Phase 1, ``head``: the base is frozen. With augmentation off, its output for an
image never changes, so the features at the cut (after the head's weightless
pooling) are extracted once (:mod:`tlstudio.core.train.extraction`, through the
feature cache) and a head-only model sharing the head's layers trains on them.
With augmentation on, the full classifier trains on live, augmented images.
Phase 2, ``fine-tune`` (when ``fine_tune_epochs > 0``): the last base layers are
unfrozen and the full classifier trains on images at the learning rate times
``fine_tune_lr_factor``; the caller's base model gets its pretrained weights back
when the run ends. Across both phases the weights with the lowest validation
loss are kept. The loop's concerns (NaN, events, ETA, stop requests, early
stopping, checkpoints) are the callbacks of :mod:`tlstudio.core.train.callbacks`;
batch-norm finalisation is :mod:`tlstudio.core.train.batch_norm`.

Events: ``PhaseStarted``, ``BatchEnded`` after every training batch, ``EpochEnded``
after every epoch (``epoch`` from 1 within its phase; ``batch`` and ``step``, across
the run, from 0); extraction reports ``Progress(task="extract")``.

Stops and faults: ``should_stop`` is checked after every batch. Every epoch end
writes the best model so far, history, metrics and a checkpoint into the run
folder (:mod:`tlstudio.core.train.run_folder`). After an epoch has ended, a stop
keeps the best weights (``cancelled=True``, resumable) and an error or a kill
leaves an *interrupted* run whose best model works; :func:`resume` continues it,
restoring weights, optimizer state and shuffle order, so it ends as an
uninterrupted run would (tested to 1e-4; with augmentation the random
transformations after the resume point differ). Before the first epoch ends, a
stop raises ``Cancelled`` and the run leaves nothing behind but what was there.
An image that cannot be decoded is skipped, named in a warning and the log,
and counted (``skipped_images``, ``skipped.json``); training stops only when a
class no longer has enough images.

Devices: both phases run one custom loop on a ``tf.distribute`` strategy
(:mod:`tlstudio.core.train.distribute`); the batch size is per replica. On a
cluster only the chief writes the run folder; other workers use a temporary one.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from tlstudio.core.data import feature_cache, pipeline
from tlstudio.core.data.dataset import Dataset, ImageItem, apply_corrections, scan_data_spec
from tlstudio.core.spec import anatomy
from tlstudio.core.model import backbones, classifier, tensors
from tlstudio.core.spec.errors import Cancelled, ImageError, RecipeError, UserError
from tlstudio.core.spec.text import counted
from tlstudio.core.spec.events import Message, OnEvent, PhaseStarted, ShouldStop, ignore_event, never_stop
from tlstudio.core.spec.recipe import Recipe, TrainSpec, save_project
from tlstudio.core.train import (
    acceleration, callbacks, checkpoint, distribute, extraction, model_writer, run_folder, runs, shared_extraction,
)
from tlstudio.core.train.batch_norm import finalize_batch_norm, finalize_from_features, finalize_in_run, split_head
from tlstudio.core.train.callbacks import FINE_TUNE_PHASE, HISTORY_KEYS, LoopState, Phase
from tlstudio.core.train.objectives import class_weights as _class_weights
from tlstudio.core.train.objectives import labels as _labels
from tlstudio.core.train.objectives import loss_and_accuracy as _loss_and_accuracy
from tlstudio.core.train.objectives import optimizer as _optimizer
from tlstudio.core.train.objectives import unique as _unique
from tlstudio.core.train.run_log import RunLog

__all__ = ["FINE_TUNE_PHASE", "HEAD_PHASE", "HISTORY_KEYS", "RunResult", "finalize_batch_norm", "resume", "train"]

HEAD_PHASE = "head"
MODEL_SAVE_INTERVAL_S = 30.0
"""During training the best model is written into the run folder at most this often (its first best at
once, and the final model at the end): saving a VGG16 classifier takes about 0.2 s, more than an epoch of a
head on cached features (in the head phase it is written while training goes on, see
:mod:`tlstudio.core.train.model_writer`). ``metrics.json`` always describes the model in the folder."""
_PROGRESS_METRICS = ("epochs", "head_epochs", "skipped_images")
_MODEL_METRICS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss", "best_epoch")


def _saved_metrics(folder: Path) -> dict[str, float] | None:
    """The metrics of the model a resumed run's folder holds; None when it holds none or they cannot be read."""
    if not (folder / runs.MODEL_FILE).is_file():
        return None
    try:
        metrics = runs.load_run(folder).metrics
    except UserError:
        return None
    return {key: metrics[key] for key in _MODEL_METRICS} if set(_MODEL_METRICS) <= metrics.keys() else None


@dataclass(frozen=True)
class RunResult:
    """What a run produced.

    ``history`` holds one value per epoch across both phases (keys
    ``HISTORY_KEYS``); ``metrics`` the final ``val_accuracy``, ``val_loss``,
    ``train_accuracy`` and ``train_loss`` plus ``best_epoch``, ``epochs``,
    ``head_epochs`` and ``skipped_images``. ``best_epoch`` counts epochs from 1
    across both phases (0 when none ended). ``skipped`` lists the images left
    out as unreadable, ``(path, reason)``. ``chief`` is False on the workers of
    a cluster other than the chief, whose ``run_dir`` was temporary and no
    longer exists.
    """

    run_dir: Path
    classes: tuple[str, ...]
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    cancelled: bool = False
    stopped_early: bool = False
    chief: bool = True
    skipped: tuple[tuple[str, str], ...] = ()


def train(
    recipe: Recipe,
    dataset: Dataset | None = None,
    base_model: "keras.Model | None" = None,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
    out_dir: str | Path | None = None,
    strategy: "tf.distribute.Strategy | None" = None,
    resume_dir: str | Path | None = None,
) -> RunResult:
    """Train ``recipe`` and write a run folder; see the module docstring for the phases and faults.

    ``dataset`` defaults to scanning ``recipe.data``; ``base_model`` to building
    ``recipe.base``. ``out_dir`` is the run folder itself (created; if it
    exists it must be empty); by default a new folder under the runs
    directory. ``resume_dir`` continues the interrupted or stopped run in that
    folder instead (``recipe`` must be the run's; see :func:`resume`). Raises
    DataError for unusable data, TrainingError when the loss becomes NaN, the
    device runs out of memory or the run folder cannot be written, Cancelled
    when stopped before the first epoch ended.

    ``strategy`` defaults to :func:`distribute.training_strategy`; the models
    are built in its scope.
    """
    distribute.prepare_devices()
    if strategy is None:
        strategy = distribute.training_strategy(should_stop)
    chief = distribute.is_chief(strategy)
    start = run_folder.resume_point(Path(resume_dir).expanduser(), out_dir) if resume_dir is not None else None
    target = run_folder.check_out_dir(out_dir) if chief and resume_dir is None else None
    if dataset is None:
        dataset = scan_data_spec(recipe.data, on_event=on_event, should_stop=should_stop)
    dataset = apply_corrections(dataset, recipe.data, on_event)
    if start is not None:
        dataset = run_folder.same_data(dataset, start)
    dataset.require_trainable()
    with strategy.scope(), acceleration.dtype_policy(acceleration.choose_policy()):
        if base_model is None:
            base_model = backbones.build_base(recipe.base, on_event=on_event, should_stop=should_stop)
        elif distribute.replicas(strategy) > 1:
            base_model = distribute.copy_model(base_model)
        keras.utils.set_random_seed(recipe.data.seed)
        recipe = _recipe_for(recipe, base_model, on_event)
        cut = recipe.cut_tensor or tensors.default_cut_tensor(base_model)
        recipe = recipe.replace(cut_tensor=cut)
        model = classifier.build_classifier(
            base_model, cut, len(dataset.classes), recipe.head, backbones.preprocessing_mode(recipe.base)
        )
    distribute.local_predictions(model, strategy)
    if should_stop():
        raise Cancelled("Training was cancelled before it started.")
    if not chief:
        created, run_dir = True, Path(tempfile.mkdtemp(prefix="tlstudio-worker-"))
    elif resume_dir is not None:
        created, run_dir = False, Path(resume_dir).expanduser()
    else:
        created = target is None or not target.exists()
        run_dir = runs.new_run_dir() if target is None else runs.make_folder(target, "the output folder")
    lock = runs.RunLock(run_dir)
    if chief and not lock.acquire():
        raise UserError(f"Another TL Studio process is training in {str(run_dir)!r}. Wait for it to end.")
    log = RunLog(run_dir / runs.LOG_FILE)
    trainer = _Trainer(recipe, dataset, model, run_dir, log.forwarding(on_event), should_stop, strategy, start)
    try:
        with distribute.inference_scope(strategy), distribute.device_faults(strategy, recipe.training.batch_size):
            result = trainer.run()
    except BaseException as error:
        if not chief:
            shutil.rmtree(run_dir, ignore_errors=True)
        elif trainer.kept_epochs or start is not None:
            trainer.keep_best_model()
            run_folder.mark_interrupted(run_dir, error, trainer.state.epoch, log, on_event)
        else:
            run_folder.discard(run_dir, created)
        raise
    finally:
        lock.release()
    if chief:
        return result
    shutil.rmtree(run_dir, ignore_errors=True)
    on_event(Message("This worker's copy of the run was temporary and is deleted; the chief wrote the run folder."))
    return dataclasses.replace(result, chief=False)


def resume(run_dir: str | Path, **options) -> RunResult:
    """Continue the interrupted or stopped run in ``run_dir`` with its own recipe; ``options`` as for :func:`train`."""
    run = runs.load_run(run_dir)
    return train(run.recipe, resume_dir=run.path, **options)


class _Trainer:
    """One run of ``train``: the model, the data, the loop state and the run folder."""

    def __init__(
        self,
        recipe: Recipe,
        dataset: Dataset,
        model: "keras.Model",
        run_dir: Path,
        report: OnEvent,
        should_stop: ShouldStop,
        strategy: "tf.distribute.Strategy",
        start: run_folder.Start | None,
    ) -> None:
        self.recipe = recipe
        self.spec: TrainSpec = recipe.training
        self.dataset = dataset
        self.model = model
        self.run_dir = run_dir
        self.report = report
        self.should_stop = should_stop
        self.strategy = strategy
        self.chief = distribute.is_chief(strategy)
        self.global_batch = self.spec.batch_size * distribute.replicas(strategy)
        self.input_size = int(model.input_shape[1])
        self.classes_count = len(dataset.classes)
        self.point = start.point if start is not None else None
        self.resumed = start is not None
        self.state = self.point.loop if self.point is not None else LoopState()
        self.skipped = extraction.SkippedImages(list(self.point.skipped) if self.point is not None else [])
        self.kept_epochs = 0
        self.model_saved_at = -math.inf
        self.features: tuple[np.ndarray, np.ndarray] | None = None
        self.head_model: "keras.Model | None" = None
        self.frozen, self.chain = split_head(model)
        self.writer = model_writer.ModelWriter(run_dir, model, self.frozen, self.chain,
                                               _saved_metrics(run_dir) if self.resumed else None)
        self.feature_set = feature_cache.feature_set_key(self.frozen, extraction.base_label(recipe), recipe.cut_tensor)
        self.fine_tuned: list[str] = []
        self.base_weights: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []
        self.phase_name = HEAD_PHASE
        self.optimizer: keras.optimizers.Optimizer | None = None

    def run(self) -> RunResult:
        try:
            return self._run()
        finally:
            self._restore_base()

    def _run(self) -> RunResult:
        if self.point is not None and self.point.feature_key != self.feature_set.digest:
            raise UserError(
                f"The base model differs from the one run {self.run_dir.name!r} started with (its weights or "
                "its cut changed), so it cannot be resumed. Train the recipe again as a new run."
            )
        if self.resumed:
            runs.remove_partial_files(self.run_dir)
        else:
            save_project(self.recipe, self.run_dir / runs.RECIPE_FILE)
            runs.write_json(self.run_dir / runs.CLASSES_FILE, list(self.dataset.classes))
        if self.chief:
            runs.write_status(self.run_dir, runs.RUNNING)
        done = self.state.epoch
        self.report(
            Message(
                (f"Resuming run {self.run_dir.name} after epoch {done}: " if self.resumed else
                 f"Run {self.run_dir.name}: ")
                + f"{len(self.dataset.train)} training and {len(self.dataset.val)} validation images in "
                f"{self.classes_count} classes; base {self.recipe.base.name}, cut at {self.recipe.cut_tensor}, "
                f"input {self.input_size}x{self.input_size}."
            )
        )
        cancelled = False
        try:
            if self.point is None or self.point.phase == HEAD_PHASE:
                self._head_phase()
            if self.spec.fine_tune_epochs > 0:
                self._fine_tune_phase()
        except Cancelled:
            if not self.state.best.epoch:
                raise
            cancelled = True
            self.state.best.restore()
            self.report(Message(f"Training stopped on request; keeping the best weights "
                                f"(epoch {self.state.best.epoch})."))
        finalised = False
        if self.spec.finalize_batch_norm and not cancelled:
            finalised = self._finalize()
        val_metrics = self._validation_metrics() if finalised else {}
        return self._save(cancelled, val_metrics)

    # ----- phases ------------------------------------------------------------------------------------------

    def _head_phase(self) -> None:
        point = self.point
        self.point = None
        watched = _unique([v for layer in self.chain for v in layer.variables])
        if self.spec.augmentation:
            self.report(
                Message(
                    "Augmentation is on, so every epoch sees different pixels: the head trains on live "
                    "images through the frozen base (slower than training on extracted features; the "
                    "feature cache is not used). Turn augmentation off to train the head on cached features."
                )
            )
            self._phase(HEAD_PHASE, self.model, self._image_data, self.spec.epochs, self.spec.learning_rate,
                        watched, point)
            self.state.head_epochs = self.state.epoch
            return
        self.report(
            Message(
                "The base is frozen and augmentation is off, so the base runs once per image: features at "
                f"{self.recipe.cut_tensor} are extracted for the {len(self.dataset.train) + len(self.dataset.val)} "
                "training and validation images and the head trains on them, each epoch a pass through "
                "the head only."
            )
        )
        train_x, val_x = extraction.retrying(self._cached_features, self._skip_unreadable)
        self.features = (train_x, val_x)
        # The head's batch-norm statistics start from the training features rather than 0 and 1, so
        # validation metrics mean something from the first epoch (and head_bn, whose input is fixed,
        # starts exact).
        finalize_from_features(self.model, self.chain, train_x, self.spec.batch_size)
        inputs = keras.Input(train_x.shape[1:], name="features")
        x = inputs
        for layer in self.chain:
            x = layer(x)
        self.head_model = keras.Model(inputs, x, name="head_only")
        self._phase(HEAD_PHASE, self.head_model, self._feature_data, self.spec.epochs, self.spec.learning_rate,
                    watched, point)
        self.state.head_epochs = self.state.epoch

    def _cached_features(self) -> tuple[np.ndarray, np.ndarray]:
        def extract(splits: list) -> list[np.ndarray]:
            return extraction.cached_features(
                self.frozen, self.feature_set, tuple(zip(splits, ("training", "validation"))), self.input_size,
                self.spec.batch_size, self.report, self.should_stop,
            )

        train_x, val_x = shared_extraction.shared_features(
            self.strategy, (self.dataset.train, self.dataset.val), extract, tuple(self.frozen.output_shape[1:]),
            self.report,
        )
        return train_x, val_x

    def _fine_tune_phase(self) -> None:
        point = self.point
        self.point = None
        if self.chief:  # a model written in the background shares the base, which now starts to change
            with run_folder.epoch_saving(self.run_dir, self.state.epoch):
                self.writer.wait()
        names = classifier.unfreeze_for_fine_tuning(self.model, self.spec.fine_tune_layers, self.spec.fine_tune_from)
        base = self.model.get_layer(anatomy.BASE_NAME)
        self.base_weights = [(base.get_layer(name), base.get_layer(name).get_weights()) for name in names]
        self.fine_tuned = list(names)
        self.report(Message(f"Fine-tuning {counted(len(names), 'layer')} of the base: {', '.join(names)}."))
        self.features = None
        watched = _unique(
            list(self.model.trainable_variables) + [v for layer in self.chain for v in layer.variables]
        )
        rate = self.spec.learning_rate * self.spec.fine_tune_lr_factor
        self._phase(FINE_TUNE_PHASE, self.model, self._image_data, self.spec.fine_tune_epochs, rate, watched, point)

    def _restore_base(self) -> None:
        """Put back the pretrained weights of fine-tuned layers: the caller's base shares them."""
        for layer, weights in self.base_weights:
            layer.set_weights(weights)

    def _feature_data(self) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        assert self.features is not None
        train_x, val_x = self.features
        batch = self.spec.batch_size
        return (
            pipeline.feature_batches(train_x, _labels(self.dataset.train), batch, self.recipe.data.seed),
            pipeline.feature_batches(val_x, _labels(self.dataset.val), batch),
        )

    def _image_data(self) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        batch = self.spec.batch_size
        train_data = pipeline.image_batches(
            self.dataset.train, self.classes_count, self.input_size, batch, shuffle=True,
            augment=self.spec.augmentation, seed=self.recipe.data.seed, cache_decoded=True,
        )
        val_data = pipeline.image_batches(
            self.dataset.val, self.classes_count, self.input_size, batch, shuffle=False, cache_decoded=True
        )
        return train_data, val_data

    def _phase(
        self,
        name: str,
        fit_model: "keras.Model",
        make_data: Callable[[], tuple[tf.data.Dataset, tf.data.Dataset]],
        epochs: int,
        learning_rate: float,
        watched: list,
        point: checkpoint.Checkpoint | None,
    ) -> None:
        """Train ``fit_model`` for up to ``epochs`` epochs, each a training pass then a validation pass.

        Every step runs through :class:`distribute.TrainingSteps` on the run's
        strategy, in global batches; the callbacks receive the hooks Keras'
        ``fit`` would call. With ``point``, the phase continues from that checkpoint.
        """
        state = self.state
        steps = distribute.steps_per_epoch(len(self.dataset.train), self.global_batch, self.strategy)
        with self.strategy.scope():
            optimizer = distribute.with_loss_scaling(_optimizer(self.spec, learning_rate, epochs * steps), fit_model)
        class_weights = None
        if self.spec.class_weights:
            balanced = _class_weights(self.dataset.train, self.classes_count)
            class_weights = [balanced.get(label, 1.0) for label in range(self.classes_count)]
        runner = distribute.TrainingSteps(self.strategy, fit_model, optimizer, class_weights)
        batches: list = []

        def load_data() -> None:
            train_data, val_data = make_data()
            batches[:] = [runner.distribute(train_data, self.global_batch, len(self.dataset.train)),
                          runner.distribute(val_data, self.global_batch)]

        load_data()
        runner.trace(*batches)
        state.best.watch(watched)
        self.phase_name, self.optimizer = name, optimizer
        if point is None:
            state.phase_epoch, state.phase_best, state.waited = 0, math.inf, 0
        else:
            checkpoint.restore(point, self.model, self.fine_tuned, optimizer, watched)
            state.best.values = [np.asarray(v) for v in point.best_values]
            for _ in range(state.phase_epoch):
                iter(batches[0])  # each new iterator draws the next epoch's shuffle order
        self.report(PhaseStarted(name, epochs, steps, learning_rate))
        phase = Phase(name, epochs, steps, learning_rate, len(self.dataset.train), self.global_batch)
        eta = callbacks.Eta(phase, state)
        hooks = keras.callbacks.CallbackList(
            [
                callbacks.NanGuard(phase, state, self.spec.learning_rate, self.spec.fine_tune_lr_factor),
                eta,
                callbacks.EpochRecord(state),
                callbacks.ProgressEvents(phase, state, eta, self.report),
                callbacks.StopRequests(self.should_stop, self.strategy),
                callbacks.EarlyStopping(phase, state, self.spec.early_stopping_patience),
                callbacks.Checkpointing(lambda ending: self._checkpoint(ending, epochs)),
            ],
            model=fit_model,
        )

        def rate() -> float:
            return float(keras.ops.convert_to_numpy(optimizer.learning_rate))

        def epoch_pass(epoch: int) -> None:
            hooks.on_epoch_begin(epoch)
            train_sums, val_sums = callbacks.RunningMeans(), callbacks.RunningMeans()
            for batch, data in enumerate(batches[0]):
                sums, learning_rate = runner.train(data)
                train_sums.add(sums)
                hooks.on_train_batch_end(batch, {**train_sums.logs(), "learning_rate": learning_rate})
            for batch, data in enumerate(batches[1]):
                val_sums.add(runner.evaluate(data))
                hooks.on_test_batch_end(batch)
            hooks.on_epoch_end(epoch, {**train_sums.logs(), **val_sums.logs("val_"), "learning_rate": rate()})

        def skip_and_reload(error: ImageError) -> None:
            self._skip_unreadable(error)
            load_data()

        fit_model.stop_training = False
        already_done = point is not None and point.phase_done
        try:
            hooks.on_train_begin()
            for epoch in range(state.phase_epoch, 0 if already_done else epochs):
                extraction.retrying(lambda: epoch_pass(epoch), skip_and_reload)
                if fit_model.stop_training:
                    break
        finally:
            state.best.restore()
        if fit_model.stop_training:
            self.report(
                Message(
                    "Early stopping: no lower validation loss for "
                    f"{counted(self.spec.early_stopping_patience, 'epoch')}; "
                    f"keeping the weights of epoch {state.best.epoch}."
                )
            )

    def _skip_unreadable(self, error: ImageError) -> None:
        """Leave out ``error``'s image and every other one that cannot be decoded; DataError when too few remain."""
        self.dataset = extraction.without_unreadable(self.dataset, error, self.skipped, self.report)

    # ----- checkpoints -------------------------------------------------------------------------------------

    def _checkpoint(self, ending: bool, epochs: int) -> None:
        """At an epoch end: history, metrics and the checkpoint, then the best model when this epoch is the best
        (written in the background in the head phase)."""
        self.kept_epochs += 1
        if not self.chief:
            return
        state = self.state
        point = checkpoint.Checkpoint(
            phase=self.phase_name,
            phase_done=ending or state.phase_epoch >= epochs,
            loop=state,
            feature_key=self.feature_set.digest,
            classes=tuple(self.dataset.classes),
            skipped=list(self.skipped.files),
            fine_tuned=list(self.fine_tuned),
            layers=checkpoint.layer_values(self.model, self.fine_tuned),
            optimizer=[v.numpy() for v in self.optimizer.variables] if self.optimizer is not None else [],
            best_values=list(state.best.values),
        )
        metrics = self._metrics({})
        self.writer.record_epoch({key: metrics[key] for key in _PROGRESS_METRICS},
                                 lambda described: run_folder.save_epoch(self.run_dir, described, point))
        now = time.monotonic()
        with run_folder.epoch_saving(self.run_dir, state.epoch):
            self.writer.check()
            if state.improved and now - self.model_saved_at >= MODEL_SAVE_INTERVAL_S:
                self.model_saved_at = now
                # Only the head changes in the head phase: its model is written while the next epochs run.
                self.writer.write(metrics, in_background=self.phase_name == HEAD_PHASE)

    def keep_best_model(self) -> None:
        """After an error: write the best model into the run folder when the one there is older.

        Model saves are spaced out (:data:`MODEL_SAVE_INTERVAL_S`); an error is reported, not fatal, so the
        best weights (put back when the phase ended) still reach the folder. Only a kill leaves an older one.
        """
        if not self.chief:
            return
        self.writer.wait_quietly()
        best, saved = self.state.best.epoch, self.writer.saved
        if not best or (saved is not None and saved["best_epoch"] == best):
            return
        try:
            self.writer.write(self._metrics({}))
        except Exception:  # the run's own error is the one to report; the older model stays
            return

    # ----- the end -----------------------------------------------------------------------------------------

    def _finalize(self) -> bool:
        """Finalise the head's BN layers; False when there are none or on a stop request."""

        def extract(splits: list) -> list[np.ndarray]:
            return [extraction.extract(self.frozen, splits[0], self.input_size, self.spec.batch_size, self.report,
                                       self.should_stop, "training")]

        return finalize_in_run(
            self.model, self.chain, self.features[0] if self.features is not None else None,
            lambda: self._shared_pass(lambda: self.dataset.train, extract, tuple(self.frozen.output_shape[1:])),
            self.spec.batch_size, self.report,
        )

    def _validation_metrics(self) -> dict[str, float]:
        """Loss and accuracy of the final model on the validation images (each worker of a cluster runs
        its share of them through the base)."""
        if self.features is not None and self.head_model is not None:
            probabilities = self.head_model.predict(self.features[1], batch_size=self.spec.batch_size, verbose=0)
        else:

            def predict(splits: list) -> list[np.ndarray]:
                if not splits[0]:
                    return [np.zeros((0, self.classes_count), dtype=np.float32)]
                batches = pipeline.image_batches(
                    splits[0], self.classes_count, self.input_size, self.spec.batch_size, shuffle=False
                )
                with pipeline.image_errors_surfaced():
                    return [self.model.predict(batches, verbose=0)]

            probabilities = self._shared_pass(lambda: self.dataset.val, predict, (self.classes_count,),
                                              "ran the validation pass on")
        return _loss_and_accuracy(probabilities, _labels(self.dataset.val))

    def _shared_pass(
        self, items: Callable[[], Sequence[ImageItem]], run: shared_extraction.Extract, row_shape: tuple[int, ...],
        done: str = shared_extraction.EXTRACTED,
    ) -> np.ndarray:
        """``run``'s rows for ``items()`` (read again after unreadable images are left out), each worker of
        a cluster running its share."""
        return extraction.retrying(
            lambda: shared_extraction.shared_features(self.strategy, (items(),), run, row_shape, self.report,
                                                      done)[0],
            self._skip_unreadable,
        )

    def _metrics(self, val_metrics: dict[str, float]) -> dict[str, float]:
        best = self.state.best
        return {
            "val_accuracy": val_metrics.get("accuracy", best.metrics["val_accuracy"]),
            "val_loss": val_metrics.get("loss", best.metrics["val_loss"]),
            "train_accuracy": best.metrics["accuracy"],
            "train_loss": best.metrics["loss"],
            "best_epoch": float(best.epoch),
            "epochs": float(self.state.epoch),
            "head_epochs": float(self.state.head_epochs or self.state.epoch),
            "skipped_images": float(len(self.skipped)),
        }

    def _save(self, cancelled: bool, val_metrics: dict[str, float]) -> RunResult:
        state = self.state
        metrics = self._metrics(val_metrics)
        if self.chief:
            self.writer.wait_quietly()  # the final model replaces it either way
            run_folder.save_end(self.run_dir, self.model, state.history, metrics, self.skipped.files,
                                f"stopped on request after epoch {state.epoch}" if cancelled else None)
        if self.skipped.files:
            self.report(Message(f"Unreadable images skipped: {len(self.skipped)}; they are listed in "
                                f"{runs.SKIPPED_FILE}.", "warning"))
        self.report(
            Message(
                f"Saved the run in {self.run_dir}: validation accuracy {metrics['val_accuracy']:.4f}, "
                f"validation loss {metrics['val_loss']:.4f} (best epoch {state.best.epoch} of {state.epoch})."
            )
        )
        return RunResult(
            run_dir=self.run_dir,
            classes=tuple(self.dataset.classes),
            history={key: list(values) for key, values in state.history.items()},
            metrics=metrics,
            best_epoch=state.best.epoch,
            cancelled=cancelled,
            stopped_early=state.stopped_early,
            skipped=tuple(self.skipped.files),
        )


def _recipe_for(recipe: Recipe, base_model: "keras.Model", on_event: OnEvent) -> Recipe:
    """The recipe with the input size the base model actually takes."""
    size = base_model.input_shape[1]
    if size is None or size == recipe.base.input_size:
        return recipe
    try:
        updated = recipe.replace(base=dataclasses.replace(recipe.base, input_size=int(size)))
    except RecipeError:
        return recipe
    on_event(Message(f"The base model takes {size}x{size} images; using input size {size} "
                     f"instead of {recipe.base.input_size}."))
    return updated
