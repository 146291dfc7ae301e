"""Training a recipe: the head on a frozen base, then optional fine-tuning.

``train`` runs one recipe and writes a run folder (see :mod:`tlstudio.core.train.runs`).

Phase 1, ``head``: the base is frozen and called with ``training=False``, so its
output for an image never changes. With augmentation off, the base therefore
runs once per image: the features at the cut (after the head's pooling or
flattening, which have no weights) are extracted for the training and
validation images, and a head-only model that shares the head's layers with
the full classifier trains on them. Each epoch then costs a pass through the
head only instead of the whole base. The features persist in the feature
cache (:mod:`tlstudio.core.data.feature_cache`), so a later run with another head
or other settings extracts only the images the cache lacks. With augmentation
on, every epoch sees different pixels, so the full classifier trains on live,
augmented images and the feature cache is not used (a few augmented copies per
image would repeat the same variations every epoch, which is not the
augmentation the user asked for).

Phase 2, ``fine-tune`` (when ``fine_tune_epochs > 0``): the last layers of the
base are unfrozen and the full classifier trains on images at the learning
rate times ``fine_tune_lr_factor``. The base model passed in shares its layers
with the classifier; its pretrained weights are put back once the run is saved.

Across both phases the weights with the lowest validation loss are kept: each
phase ends with them restored, and they are what the run saves. Early stopping
ends a phase after ``early_stopping_patience`` epochs without a lower
validation loss (0 turns it off).

Events: ``PhaseStarted`` at the start of each phase, ``BatchEnded`` after every
training batch and ``EpochEnded`` after every epoch. ``epoch`` counts from 1
within its phase; ``batch`` (within the epoch) and ``step`` (across the run)
count from 0. Feature extraction reports ``Progress(task="extract")``.

Stopping: ``should_stop`` is checked after every training, validation and
extraction batch. Once at least one epoch has ended, a stop keeps the best
weights so far: the run folder is written and the result has
``cancelled=True``. A stop before the first epoch ends raises ``Cancelled``;
like any error, it leaves no run behind (the folder ``train`` created is
removed, or an ``out_dir`` that was empty is emptied again), so the same
command can simply be run again.

Devices: both phases run the same custom training loop on a
``tf.distribute`` strategy (:mod:`tlstudio.core.train.distribute`): one device,
``MirroredStrategy`` over several GPUs, or ``MultiWorkerMirroredStrategy``
across the machines ``TF_CONFIG`` lists. The recipe's batch size is per
replica; a step learns from that times the number of replicas. On a cluster
only the chief writes the run folder; every other worker writes its copy to a
temporary folder, deleted when the run ends.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from tlstudio.core.train import acceleration, distribute, feature_stream, runs
from tlstudio.core.model import backbones, classifier, head, tensors
from tlstudio.core.data import feature_cache, pipeline
from tlstudio.core.data.dataset import Dataset, ImageItem, scan_data_spec
from tlstudio.core.spec.errors import Cancelled, DataError, ImageError, RecipeError, TrainingError, UserError
from tlstudio.core.spec.events import (
    BatchEnded,
    EpochEnded,
    Event,
    Message,
    OnEvent,
    PhaseStarted,
    Progress,
    ShouldStop,
    ignore_event,
    never_stop,
)
from tlstudio.core.spec.recipe import Recipe, TrainSpec, save_project

HEAD_PHASE = "head"
FINE_TUNE_PHASE = "fine-tune"
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
_WEIGHTLESS_HEAD_START = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.Flatten,
)
_EPSILON = 1e-7
"""Probabilities are clipped to [eps, 1 - eps] before the log, as Keras' crossentropy does."""


@dataclass(frozen=True)
class RunResult:
    """What a run produced.

    ``history`` holds one value per epoch across both phases (keys
    ``HISTORY_KEYS``); ``metrics`` the final ``val_accuracy``, ``val_loss``,
    ``train_accuracy`` and ``train_loss`` plus ``best_epoch``, ``epochs`` and
    ``head_epochs``. ``best_epoch`` counts epochs from 1 across both phases
    (0 when none ended). ``chief`` is False on the workers of a cluster other
    than the chief, whose ``run_dir`` was temporary and no longer exists.
    """

    run_dir: Path
    classes: tuple[str, ...]
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    cancelled: bool = False
    stopped_early: bool = False
    chief: bool = True


def train(
    recipe: Recipe,
    dataset: Dataset | None = None,
    base_model: "keras.Model | None" = None,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
    out_dir: str | Path | None = None,
    strategy: "tf.distribute.Strategy | None" = None,
) -> RunResult:
    """Train ``recipe`` and write a run folder; see the module docstring for the phases.

    ``dataset`` defaults to scanning ``recipe.data``; ``base_model`` to building
    ``recipe.base`` (which may fetch ImageNet weights). ``out_dir`` is the run
    folder itself (created; it must be empty if it exists); by default a new
    folder under the runs directory. Raises DataError for unusable data or an
    unreadable image, TrainingError when the loss becomes NaN or the device
    runs out of memory, Cancelled when stopped before the first epoch ended.

    ``strategy`` defaults to :func:`distribute.training_strategy`; the models
    are built in its scope (a ``base_model`` passed in is copied there when
    the strategy has several replicas, and stays untouched). Under a cluster,
    ClusterError when ``TF_CONFIG`` is malformed or a worker does not answer.
    """
    distribute.prepare_devices()
    if strategy is None:
        strategy = distribute.training_strategy()
    chief = distribute.is_chief(strategy)
    target = _check_out_dir(out_dir) if chief else None
    if dataset is None:
        dataset = scan_data_spec(recipe.data, on_event=on_event, should_stop=should_stop)
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
    if chief:
        created = target is None or not target.exists()
        run_dir = runs.new_run_dir() if target is None else runs.make_folder(target, "the output folder")
    else:
        created, run_dir = True, Path(tempfile.mkdtemp(prefix="tlstudio-worker-"))
    log = _RunLog(run_dir / runs.LOG_FILE)
    try:
        with distribute.inference_scope(strategy), distribute.device_faults(strategy, recipe.training.batch_size):
            result = _Trainer(recipe, dataset, model, run_dir, log.forwarding(on_event), should_stop, strategy).run()
    except BaseException:
        _discard(run_dir, created)
        raise
    if chief:
        return result
    shutil.rmtree(run_dir, ignore_errors=True)
    on_event(Message("This worker's copy of the run was temporary and is deleted; the chief wrote the run folder."))
    return dataclasses.replace(result, chief=False)


def finalize_batch_norm(model: "keras.Model", items: Sequence[ImageItem], input_size: int, batch_size: int) -> None:
    """Set each head BatchNormalization layer's moving statistics from the whole training set.

    During training, a BN layer's moving mean and variance are an exponential
    average over recent batches, taken while the layers before it were still
    changing. This recomputes them once, over every image in ``items``
    (no augmentation, every layer in inference mode), layer by layer in order
    so each layer sees the inputs the finalised layers before it produce.

    The variance is the population (biased, ``ddof=0``) variance, the same
    estimator Keras' BatchNormalization uses for its batch statistics and
    therefore for the moving variance it applies at inference.
    """
    if not items:
        raise DataError("Batch-norm finalisation needs at least one training image; received none.")
    frozen, trainable = _split_head(model)
    features = _extract(frozen, items, input_size, batch_size, ignore_event, never_stop, "finalise")
    _finalize_from_features(model, trainable, features, batch_size)


def _finalize_from_features(model: "keras.Model", chain: list, features: np.ndarray, batch_size: int) -> int:
    """Finalise the head BN layers from precomputed frozen-prefix features; return how many."""
    norms = head.head_bn_layers(model)
    for norm in norms:
        before = chain[: chain.index(norm)]
        values = _apply_layers(before, features, batch_size)
        axis = norm.axis if isinstance(norm.axis, int) else norm.axis[0]
        axes = tuple(a for a in range(values.ndim) if a != axis % values.ndim)
        norm.moving_mean.assign(values.mean(axis=axes, dtype=np.float64).astype(np.float32))
        norm.moving_variance.assign(values.var(axis=axes, dtype=np.float64).astype(np.float32))
    return len(norms)


def _apply_layers(layers: Sequence, values: np.ndarray, batch_size: int) -> np.ndarray:
    """Run ``values`` through ``layers`` in inference mode, in chunks."""
    if not layers:
        return values
    chunk = max(batch_size, 256)
    outputs = []
    for start in range(0, len(values), chunk):
        x = tf.convert_to_tensor(values[start : start + chunk])
        for layer in layers:
            x = layer(x, training=False)
        outputs.append(keras.ops.convert_to_numpy(x))
    return np.concatenate(outputs, axis=0)


def _split_head(model: "keras.Model") -> tuple["keras.Model", list]:
    """The classifier as (frozen part, list of the trainable head layers in order).

    The frozen part runs from the image input through the base to the cut
    tensor and through the head's leading pooling or flattening layer, which
    has no weights; its output is what the feature path extracts once.
    """
    head_layers = [layer for layer in model.layers if layer.name.startswith("head_")]
    if not head_layers:
        raise ValueError("The model has no head layers (named 'head_...'); build it with build_classifier.")
    leading = 0
    while leading < len(head_layers) - 1 and isinstance(head_layers[leading], _WEIGHTLESS_HEAD_START):
        leading += 1
    # Node 0 of a head layer is its call inside the classifier itself.
    boundary = head_layers[leading - 1].output if leading else head_layers[0].input
    frozen = keras.Model(model.inputs, boundary, name="frozen_part")
    return frozen, head_layers[leading:]


def _extract(
    frozen: "keras.Model",
    items: Sequence[ImageItem],
    input_size: int,
    batch_size: int,
    on_event: OnEvent,
    should_stop: ShouldStop,
    label: str,
) -> np.ndarray:
    """The frozen part's output for every item, in order, as float32."""
    classes_count = max((item.label for item in items), default=0) + 1
    batches = pipeline.image_batches(items, classes_count, input_size, batch_size, shuffle=False)
    progress = _ExtractProgress(len(items), batch_size, on_event, should_stop, label)
    acceleration.configure_jit(frozen)
    with _image_errors_as_data_errors():
        values = frozen.predict(batches, verbose=0, callbacks=[progress])
    return np.asarray(values, dtype=np.float32)


class _ExtractProgress(keras.callbacks.Callback):
    """Progress and cancellation while features are extracted."""

    def __init__(self, total: int, batch_size: int, on_event: OnEvent, should_stop: ShouldStop, label: str) -> None:
        super().__init__()
        self.total = total
        self.batch_size = batch_size
        self.on_event = on_event
        self.should_stop = should_stop
        self.label = label

    def on_predict_begin(self, logs=None) -> None:
        self.on_event(Progress("extract", 0, self.total, f"features of the {self.label} images"))

    def on_predict_batch_end(self, batch, logs=None) -> None:
        done = min(self.total, (batch + 1) * self.batch_size)
        self.on_event(Progress("extract", done, self.total, f"features of the {self.label} images"))
        if self.should_stop():
            raise Cancelled("Feature extraction was cancelled.")


@contextmanager
def _image_errors_as_data_errors() -> Iterator[None]:
    """An image the pipeline cannot decode stops training with a DataError naming the file."""
    try:
        with pipeline.image_errors_surfaced():
            yield
    except ImageError as error:
        raise DataError(
            f"Training stopped: the image {error.path!r} cannot be read ({error.reason}). "
            "Remove or replace the file, then scan the data again."
        ) from None


@dataclass
class _Best:
    """The lowest validation loss so far, its epoch and a copy of the weights that reached it."""

    val_loss: float = math.inf
    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    variables: list = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)

    def watch(self, variables: list) -> None:
        """Track ``variables`` from now on; the model holds the best weights so far."""
        self.variables = variables
        self.values = [v.numpy() for v in variables] if self.epoch else []

    def offer(self, epoch: int, metrics: dict[str, float]) -> None:
        """Keep the current weights if ``metrics['val_loss']`` is the lowest yet."""
        if metrics["val_loss"] < self.val_loss:
            self.val_loss = metrics["val_loss"]
            self.epoch = epoch
            self.metrics = dict(metrics)
            self.values = [v.numpy() for v in self.variables]

    def restore(self) -> None:
        for variable, value in zip(self.variables, self.values):
            variable.assign(value)


class _Trainer:
    """One run of ``train``: the model, the data, the history and the best weights."""

    def __init__(
        self,
        recipe: Recipe,
        dataset: Dataset,
        model: "keras.Model",
        run_dir: Path,
        report: OnEvent,
        should_stop: ShouldStop,
        strategy: "tf.distribute.Strategy | None" = None,
    ) -> None:
        self.recipe = recipe
        self.spec: TrainSpec = recipe.training
        self.dataset = dataset
        self.model = model
        self.run_dir = run_dir
        self.report = report
        self.should_stop = should_stop
        self.strategy = strategy or tf.distribute.get_strategy()
        self.global_batch = self.spec.batch_size * distribute.replicas(self.strategy)
        self.input_size = int(model.input_shape[1])
        self.classes_count = len(dataset.classes)
        self.history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
        self.best = _Best()
        self.epoch = 0
        self.step = 0
        self.head_epochs = 0
        self.stopped_early = False
        self.features: tuple[np.ndarray, np.ndarray] | None = None
        self.head_model: "keras.Model | None" = None
        self.frozen, self.chain = _split_head(model)
        self.base_weights: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []

    def run(self) -> RunResult:
        try:
            return self._run()
        finally:
            self._restore_base()

    def _run(self) -> RunResult:
        save_project(self.recipe, self.run_dir / runs.RECIPE_FILE)
        runs.write_json(self.run_dir / runs.CLASSES_FILE, list(self.dataset.classes))
        self.report(
            Message(
                f"Run {self.run_dir.name}: {len(self.dataset.train)} training and {len(self.dataset.val)} "
                f"validation images in {self.classes_count} classes; base {self.recipe.base.name}, "
                f"cut at {self.recipe.cut_tensor}, input {self.input_size}x{self.input_size}."
            )
        )
        cancelled = False
        try:
            self._head_phase()
            if self.spec.fine_tune_epochs > 0:
                self._fine_tune_phase()
        except Cancelled:
            if not self.best.epoch:
                raise
            cancelled = True
            self.best.restore()
            self.report(Message(f"Training stopped on request; keeping the best weights (epoch {self.best.epoch})."))
        finalised = False
        if self.spec.finalize_batch_norm and not cancelled:
            finalised = self._finalize()
        val_metrics = self._validation_metrics() if finalised else {}
        return self._save(cancelled, val_metrics)

    def _head_phase(self) -> None:
        watched = _unique([v for layer in self.chain for v in layer.variables])
        if self.spec.augmentation:
            self.report(
                Message(
                    "Augmentation is on, so every epoch sees different pixels: the head trains on live "
                    "images through the frozen base (slower than training on extracted features; the "
                    "feature cache is not used). Turn augmentation off to train the head on cached features."
                )
            )
            train_data, val_data = self._image_data()
            self._phase(HEAD_PHASE, self.model, train_data, val_data, self.spec.epochs,
                        self.spec.learning_rate, watched)
            self.head_epochs = self.epoch
            return
        self.report(
            Message(
                "The base is frozen and augmentation is off, so the base runs once per image: features at "
                f"{self.recipe.cut_tensor} are extracted for the {len(self.dataset.train) + len(self.dataset.val)} "
                "training and validation images and the head trains on them, each epoch a pass through "
                "the head only."
            )
        )
        batch = self.spec.batch_size
        train_x, val_x = self._cached_features()
        self.features = (train_x, val_x)
        # The head's batch-norm statistics start from the training features rather than 0 and 1, so
        # validation metrics mean something from the first epoch (and head_bn, whose input is fixed,
        # starts exact).
        _finalize_from_features(self.model, self.chain, train_x, batch)
        inputs = keras.Input(train_x.shape[1:], name="features")
        x = inputs
        for layer in self.chain:
            x = layer(x)
        self.head_model = keras.Model(inputs, x, name="head_only")
        train_y, val_y = _labels(self.dataset.train), _labels(self.dataset.val)
        train_data = feature_stream.feature_batches(train_x, train_y, batch, seed=self.recipe.data.seed)
        val_data = feature_stream.feature_batches(val_x, val_y, batch)
        self._phase(HEAD_PHASE, self.head_model, train_data, val_data, self.spec.epochs,
                    self.spec.learning_rate, watched)
        self.head_epochs = self.epoch

    def _cached_features(self) -> tuple[np.ndarray, np.ndarray]:
        """The training and validation features, from the feature cache where it holds them.

        Only images the cache lacks for this base, weights, cut, input size,
        preprocessing and pooling are extracted; see :mod:`tlstudio.core.data.feature_cache`.
        """
        cache = feature_cache.FeatureCache()
        key = feature_cache.feature_set_key(self.frozen, _base_label(self.recipe), self.recipe.cut_tensor)
        features = []
        uses = []
        for items, label in ((self.dataset.train, "training"), (self.dataset.val, "validation")):

            def extract(missing: list, label: str = label) -> np.ndarray:
                return _extract(self.frozen, missing, self.input_size, self.spec.batch_size, self.report,
                                self.should_stop, label)

            values, use = cache.features(key, items, extract)
            if not use.extracted:
                message = f"features of the {label} images (from the feature cache)"
                self.report(Progress("extract", len(items), len(items), message))
            features.append(values)
            uses.append(use)
        from_cache = sum(use.from_cache for use in uses)
        extracted = sum(use.extracted for use in uses)
        notes = "; ".join(dict.fromkeys(use.note for use in uses if use.note))
        self.report(
            Message(
                f"Feature cache: {from_cache} image(s) read from the cache, {extracted} extracted"
                + (f"; the cache {notes}" if notes else "")
                + f" (cache folder {cache.root}; clear it with 'tlstudio cache clear').",
                "warning" if notes and "off" not in notes else "info",
            )
        )
        return features[0], features[1]

    def _fine_tune_phase(self) -> None:
        names = classifier.unfreeze_for_fine_tuning(self.model, self.spec.fine_tune_layers, self.spec.fine_tune_from)
        base = self.model.get_layer(classifier.BASE_NAME)
        self.base_weights = [(base.get_layer(name), base.get_layer(name).get_weights()) for name in names]
        self.report(Message(f"Fine-tuning {len(names)} layer(s) of the base: {', '.join(names)}."))
        self.features = None
        watched = _unique(
            list(self.model.trainable_variables) + [v for layer in self.chain for v in layer.variables]
        )
        train_data, val_data = self._image_data()
        rate = self.spec.learning_rate * self.spec.fine_tune_lr_factor
        self._phase(FINE_TUNE_PHASE, self.model, train_data, val_data, self.spec.fine_tune_epochs, rate, watched)

    def _restore_base(self) -> None:
        """Put back the pretrained weights of fine-tuned layers once the run is saved.

        The classifier shares its base's layers with the caller's base model
        (the GUI keeps one loaded between runs); the next run must start from
        the pretrained weights, not from this run's fine-tuned ones.
        """
        for layer, weights in self.base_weights:
            layer.set_weights(weights)

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
        train_data: tf.data.Dataset,
        val_data: tf.data.Dataset,
        epochs: int,
        learning_rate: float,
        watched: list,
    ) -> None:
        """Train ``fit_model`` for up to ``epochs`` epochs, each a training pass then a validation pass.

        Every step runs through :class:`distribute.TrainingSteps` on the run's
        strategy, in global batches; ``_Forwarder`` receives the hooks Keras'
        ``fit`` would call (events, stop requests, NaN, early stopping).
        """
        steps = distribute.steps_per_epoch(len(self.dataset.train), self.global_batch, self.strategy)
        with self.strategy.scope():
            optimizer = distribute.with_loss_scaling(_optimizer(self.spec, learning_rate, epochs * steps), fit_model)
        class_weights = None
        if self.spec.class_weights:
            balanced = _class_weights(self.dataset.train, self.classes_count)
            class_weights = [balanced.get(label, 1.0) for label in range(self.classes_count)]
        runner = distribute.TrainingSteps(self.strategy, fit_model, optimizer, class_weights)
        train_batches = runner.distribute(train_data, self.global_batch, len(self.dataset.train))
        val_batches = runner.distribute(val_data, self.global_batch)
        runner.trace(train_batches, val_batches)
        self.best.watch(watched)
        self.report(PhaseStarted(name, epochs, steps, learning_rate))
        forwarder = _Forwarder(self, name, epochs, steps, learning_rate, optimizer)
        forwarder.set_model(fit_model)
        fit_model.stop_training = False
        try:
            with _image_errors_as_data_errors():
                forwarder.on_train_begin()
                for epoch in range(epochs):
                    forwarder.on_epoch_begin(epoch)
                    train_sums, val_sums = _Sums(), _Sums()
                    for batch, data in enumerate(train_batches):
                        train_sums.add(runner.train(data))
                        forwarder.on_train_batch_end(batch, train_sums.logs())
                    for batch, data in enumerate(val_batches):
                        val_sums.add(runner.evaluate(data))
                        forwarder.on_test_batch_end(batch)
                    forwarder.on_epoch_end(epoch, {**train_sums.logs(), **val_sums.logs("val_")})
                    if fit_model.stop_training:
                        break
        finally:
            self.best.restore()
        if forwarder.stopped_early:
            self.stopped_early = True
            self.report(
                Message(
                    f"Early stopping: no lower validation loss for {self.spec.early_stopping_patience} epoch(s); "
                    f"keeping the weights of epoch {self.best.epoch}."
                )
            )

    def end_epoch(self, metrics: dict[str, float]) -> None:
        """Record an epoch in the history, keeping its weights if its validation loss is the lowest yet."""
        self.epoch += 1
        for key in HISTORY_KEYS:
            self.history[key].append(float(metrics[key]))
        self.best.offer(self.epoch, metrics)

    def _finalize(self) -> bool:
        """Finalise the head's BN layers; False when there are none or on a stop request."""
        if not head.head_bn_layers(self.model):
            self.report(Message("Batch-norm finalisation skipped: the head has no batch-norm layers."))
            return False
        self.report(Message("Finalising batch norm: the head's mean and variance over the whole training set."))
        try:
            features = self.features[0] if self.features is not None else _extract(
                self.frozen, self.dataset.train, self.input_size, self.spec.batch_size, self.report,
                self.should_stop, "training",
            )
        except Cancelled:
            self.report(Message("Batch-norm finalisation stopped on request; keeping the trained statistics."))
            return False
        count = _finalize_from_features(self.model, self.chain, features, self.spec.batch_size)
        self.report(Message(f"Batch norm finalised in {count} layer(s)."))
        return True

    def _validation_metrics(self) -> dict[str, float]:
        """Loss and accuracy of the final model on the validation images."""
        labels = _labels(self.dataset.val)
        if self.features is not None and self.head_model is not None:
            probabilities = self.head_model.predict(self.features[1], batch_size=self.spec.batch_size, verbose=0)
        else:
            batches = pipeline.image_batches(
                self.dataset.val, self.classes_count, self.input_size, self.spec.batch_size, shuffle=False
            )
            with _image_errors_as_data_errors():
                probabilities = self.model.predict(batches, verbose=0)
        return _loss_and_accuracy(probabilities, labels)

    def _save(self, cancelled: bool, val_metrics: dict[str, float]) -> RunResult:
        best = self.best.metrics
        metrics = {
            "val_accuracy": val_metrics.get("accuracy", best["val_accuracy"]),
            "val_loss": val_metrics.get("loss", best["val_loss"]),
            "train_accuracy": best["accuracy"],
            "train_loss": best["loss"],
            "best_epoch": float(self.best.epoch),
            "epochs": float(self.epoch),
            "head_epochs": float(self.head_epochs),
        }
        self.model.save(self.run_dir / runs.MODEL_FILE)
        runs.write_json(self.run_dir / runs.HISTORY_FILE, self.history)
        runs.write_json(self.run_dir / runs.METRICS_FILE, metrics)
        self.report(
            Message(
                f"Saved the run in {self.run_dir}: validation accuracy {metrics['val_accuracy']:.4f}, "
                f"validation loss {metrics['val_loss']:.4f} (best epoch {self.best.epoch} of {self.epoch})."
            )
        )
        return RunResult(
            run_dir=self.run_dir,
            classes=tuple(self.dataset.classes),
            history={key: list(values) for key, values in self.history.items()},
            metrics=metrics,
            best_epoch=self.best.epoch,
            cancelled=cancelled,
            stopped_early=self.stopped_early,
        )


class _Forwarder(keras.callbacks.Callback):
    """Turns the training loop's hooks into TL Studio events, stops on request, on NaN and early.

    ``_Trainer._phase`` calls the hooks Keras' ``fit`` would call a callback
    with, with the same ``logs``. Raising from ``on_train_batch_end`` or
    ``on_test_batch_end`` stops within one batch; ``model.stop_training``
    ends the phase after the epoch. Across workers, a stop request on any
    worker stops them all at the same batch.
    """

    def __init__(
        self,
        trainer: _Trainer,
        phase: str,
        epochs: int,
        steps: int,
        learning_rate: float,
        optimizer: keras.optimizers.Optimizer,
    ) -> None:
        super().__init__()
        self.trainer = trainer
        self.optimizer = optimizer
        self.phase = phase
        self.epochs = epochs
        self.steps = steps
        self.initial_rate = learning_rate
        self.patience = trainer.spec.early_stopping_patience
        self.train_count = len(trainer.dataset.train)
        self.phase_best = math.inf
        self.waited = 0
        self.stopped_early = False
        self.epoch = 0
        self.phase_start = 0.0
        self.epoch_start = 0.0
        self.phase_steps = 0

    def _rate(self) -> float:
        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    def _check_stop(self) -> None:
        if distribute.agree(self.trainer.strategy, self.trainer.should_stop()):
            raise Cancelled("Training was cancelled.")

    def on_train_begin(self, logs=None) -> None:
        self.phase_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.epoch = epoch + 1
        self.epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None) -> None:
        logs = logs or {}
        loss = float(logs.get("loss", math.nan))
        rate = self._rate()
        if not math.isfinite(loss):
            self._not_finite("loss", loss, batch, rate)
        now = time.perf_counter()
        self.phase_steps += 1
        images = min(self.train_count, (batch + 1) * self.trainer.global_batch)
        speed = images / max(now - self.epoch_start, 1e-9)
        remaining = (self.epochs - self.epoch) * self.steps + max(0, self.steps - batch - 1)
        eta = (now - self.phase_start) / self.phase_steps * remaining
        self.trainer.report(
            BatchEnded(
                phase=self.phase,
                epoch=self.epoch,
                batch=batch,
                step=self.trainer.step,
                loss=loss,
                accuracy=float(logs.get("accuracy", math.nan)),
                learning_rate=rate,
                images_per_second=speed,
                eta_seconds=eta,
            )
        )
        self.trainer.step += 1
        self._check_stop()

    def on_test_batch_end(self, batch, logs=None) -> None:
        self._check_stop()

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = logs or {}
        metrics = {
            "loss": float(logs.get("loss", math.nan)),
            "accuracy": float(logs.get("accuracy", math.nan)),
            "val_loss": float(logs.get("val_loss", math.nan)),
            "val_accuracy": float(logs.get("val_accuracy", math.nan)),
            "learning_rate": self._rate(),
        }
        for key in ("loss", "val_loss"):
            if not math.isfinite(metrics[key]):
                self._not_finite(key, metrics[key], None, metrics["learning_rate"])
        self.trainer.end_epoch(metrics)
        self.trainer.report(EpochEnded(self.phase, self.epoch, dict(metrics)))
        if metrics["val_loss"] < self.phase_best:
            self.phase_best = metrics["val_loss"]
            self.waited = 0
            return
        self.waited += 1
        if self.patience and self.waited >= self.patience and self.epoch < self.epochs:
            self.stopped_early = True
            self.model.stop_training = True

    def _not_finite(self, what: str, value: float, batch: int | None, rate: float) -> None:
        where = f"epoch {self.epoch}" + (f", batch {batch}" if batch is not None else "")
        raise TrainingError(
            f"Training stopped: the {what.replace('_', ' ')} became {value} in the {self.phase} phase ({where}) "
            f"at learning rate {rate:g}. The learning rate is probably too high; try {self.initial_rate / 10:g} "
            f"or lower. Received: learning_rate={self.trainer.spec.learning_rate:g}"
            + (f", fine_tune_lr_factor={self.trainer.spec.fine_tune_lr_factor:g}" if self.phase == FINE_TUNE_PHASE
               else "")
            + "."
        )


class _Sums:
    """Running loss and accuracy over the batches of one pass, as Keras' ``fit`` logs them."""

    def __init__(self) -> None:
        self.loss = 0.0
        self.correct = 0.0
        self.count = 0.0

    def add(self, sums: Sequence[float]) -> None:
        """Add one batch's ``[loss sum, correct, images]``."""
        loss, correct, count = sums
        self.loss += loss
        self.correct += correct
        self.count += count

    def logs(self, prefix: str = "") -> dict[str, float]:
        if not self.count:
            return {f"{prefix}loss": math.nan, f"{prefix}accuracy": math.nan}
        return {f"{prefix}loss": self.loss / self.count, f"{prefix}accuracy": self.correct / self.count}


class _RunLog:
    """``log.txt``: one timestamped line per phase, epoch, message and finished extraction."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, text: str) -> None:
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with self.path.open("a", encoding="utf-8") as log:
            log.write(f"{stamp}  {text}\n")

    def forwarding(self, on_event: OnEvent) -> OnEvent:
        """An ``on_event`` that logs the event, then passes it on."""

        def report(event: Event) -> None:
            line = _log_line(event)
            if line:
                self.write(line)
            on_event(event)

        return report


def _log_line(event: Event) -> str:
    if isinstance(event, PhaseStarted):
        return (
            f"Phase {event.name}: {event.epochs} epoch(s) of {event.steps_per_epoch} batch(es), "
            f"learning rate {event.learning_rate:g}"
        )
    if isinstance(event, EpochEnded):
        values = "  ".join(f"{key} {value:.6g}" for key, value in event.metrics.items())
        return f"{event.phase} epoch {event.epoch}: {values}"
    if isinstance(event, Message):
        return f"[{event.level}] {event.text}"
    if isinstance(event, Progress) and event.total is not None and event.done == event.total:
        return f"{event.task}: {event.done}/{event.total} {event.message}".rstrip()
    return ""


def _base_label(recipe: Recipe) -> str:
    """How the feature cache lists a recipe's base model: its name, or the model file's path."""
    return recipe.base.model_file if recipe.base.name == "file" and recipe.base.model_file else recipe.base.name


def _check_out_dir(out_dir: str | Path | None) -> Path | None:
    """Refuse, before any work, an output folder that already holds files."""
    if out_dir is None:
        return None
    target = Path(out_dir).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(
            f"The output folder {str(target)!r} is not empty; a run writes its files into a folder of its own. "
            "Choose a new or empty folder."
        )
    return target


def _discard(run_dir: Path, created: bool) -> None:
    """Leave nothing of a run that produced no model: the folder if train made it, else its contents."""
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for child in run_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


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


def _optimizer(spec: TrainSpec, learning_rate: float, total_steps: int) -> keras.optimizers.Optimizer:
    rate = (
        keras.optimizers.schedules.CosineDecay(float(learning_rate), decay_steps=max(1, total_steps))
        if spec.cosine_decay
        else float(learning_rate)
    )
    if spec.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=spec.momentum)
    return keras.optimizers.Adam(rate)


def _class_weights(items: Sequence[ImageItem], classes_count: int) -> dict[int, float]:
    """'Balanced' weights: n / (classes * count), so every class weighs the same in the loss."""
    counts = np.bincount(_labels(items), minlength=classes_count)
    present = int(np.count_nonzero(counts))
    return {label: len(items) / (present * count) for label, count in enumerate(counts.tolist()) if count}


def _labels(items: Sequence[ImageItem]) -> np.ndarray:
    return np.asarray([item.label for item in items], dtype=np.int32)


def _loss_and_accuracy(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    picked = np.clip(probabilities[np.arange(len(labels)), labels], _EPSILON, 1 - _EPSILON)
    return {
        "loss": float(-np.log(picked).mean()),
        "accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
    }


def _unique(variables: list) -> list:
    seen: set[int] = set()
    result = []
    for variable in variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            result.append(variable)
    return result
