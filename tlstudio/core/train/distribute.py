"""Where training runs: one device, several GPUs, several machines, with one training loop.

:func:`training_strategy` picks TensorFlow's own strategy for this process:

- ``TF_CONFIG`` naming more than one task: ``MultiWorkerMirroredStrategy``
  (see :mod:`tlstudio.core.train.cluster`), every worker training the same model on
  its share of each batch;
- more than one GPU: ``MirroredStrategy`` over them;
- otherwise the default strategy, which is plain single-device TensorFlow.

:class:`TrainingSteps` is the training and evaluation step the training loop
runs under every strategy: a ``tf.function`` that runs one step on every
replica through ``strategy.run`` over ``experimental_distribute_dataset``, the
loss averaged over the global batch with ``tf.nn.compute_average_loss`` and
the gradients applied by a Keras optimizer. Keras' ``Model.fit`` is not used:
under ``MultiWorkerMirroredStrategy`` it fails in Keras 3 ("Attempt to convert
a value (PerReplica...)", keras-team/keras#20585), and one loop everywhere
means events, cancellation and checkpoints behave the same on a laptop and on
a cluster.

A recipe's batch size is per replica: the global batch, the images one step
learns from, is the batch size times the number of replicas, so each GPU
keeps the memory footprint the recipe was tuned for.

On GPUs, memory growth is switched on before TensorFlow initialises them;
mixed precision is :mod:`tlstudio.core.train.acceleration`'s choice, and the
optimizer gets loss scaling when the model computes in float16.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from tlstudio.core import tf_compat
from tlstudio.core.data import pipeline
from tlstudio.core.train import cluster, devices
from tlstudio.core.spec.errors import ClusterError, TrainingError
from tlstudio.core.spec.events import ShouldStop, never_stop

_SUM = tf.distribute.ReduceOp.SUM
_CLUSTER_FAULTS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)

_joined: tuple[cluster.ClusterConfig, tf.distribute.Strategy] | None = None
"""The cluster this process joined; TensorFlow joins one cluster per process, once."""


def prepare_devices() -> None:
    """Switch GPU memory growth on; call before anything touches a GPU (harmless later, and without GPUs)."""
    devices.enable_memory_growth()


def training_strategy(should_stop: ShouldStop = never_stop) -> tf.distribute.Strategy:
    """The strategy this process trains under (see the module docstring).

    Raises :class:`ClusterError` for a malformed ``TF_CONFIG`` or a worker
    that does not answer within ``TLSTUDIO_WORKER_TIMEOUT`` seconds.
    """
    config = cluster.read_tf_config()
    if config is not None and config.size > 1:
        return multi_worker_strategy(config, should_stop=should_stop)
    prepare_devices()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def multi_worker_strategy(
    config: cluster.ClusterConfig, timeout: float | None = None, should_stop: ShouldStop = never_stop
) -> tf.distribute.Strategy:
    """Join the cluster ``config`` (read from ``TF_CONFIG``) with ``MultiWorkerMirroredStrategy``.

    Waits for every other worker first (:func:`cluster.wait_for_workers`),
    then gives TensorFlow's own start-up and every collective operation the
    same timeout, so a worker that disappears ends the run with an error
    instead of a hang. Once joined, later calls return the same strategy.
    """
    global _joined
    if _joined is not None:
        if _joined[0] == config:
            return _joined[1]
        raise ClusterError(
            f"This process already trains in the cluster {_joined[0].to_tf_config()}; TensorFlow cannot join "
            "another one. Start a new process for the new TF_CONFIG."
        )
    seconds = cluster.worker_timeout() if timeout is None else timeout
    prepare_devices()
    cluster.wait_for_workers(config, seconds, should_stop)
    _configure_coordination(config, seconds)
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=seconds)
    with _deadline(seconds * 2, config):
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy(
                cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver(),
                communication_options=options,
            )
        except (tf.errors.OpError, RuntimeError) as error:
            raise ClusterError(
                f"{config.name} at {config.address} could not join the cluster {config.to_tf_config()}: "
                f"{_first_line(error)}. Check that every worker runs the same TL Studio version with the same "
                f"TF_CONFIG cluster, or raise {cluster.WORKER_TIMEOUT_ENV} (now {seconds:g} s)."
            ) from None
    _joined = (config, strategy)
    return strategy


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` spans several processes."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and tf_compat.in_multi_worker_mode(strategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run folder: always, except on the workers other than the chief."""
    return not is_multi_worker(strategy) or bool(strategy.extended.should_checkpoint)


def replicas(strategy: tf.distribute.Strategy) -> int:
    """How many copies of the model train together, across every device and worker."""
    return int(strategy.num_replicas_in_sync)


def copy_model(model: "keras.Model") -> "keras.Model":
    """A copy of ``model`` with its weights, its variables made in the current strategy scope.

    A model built outside a multi-replica scope has one copy of each variable
    on one device; training needs them mirrored. The original is left as it is.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def steps_per_epoch(count: int, global_batch: int, strategy: tf.distribute.Strategy) -> int:
    """Training steps in an epoch of ``count`` images.

    A last batch too small to give every replica an image is left out of
    that epoch (shuffling picks other images to leave out each epoch): a
    replica with no images would average its batch-norm statistics over
    nothing and store NaN.
    """
    steps, rest = divmod(count, global_batch)
    return steps + (1 if rest and rest >= replicas(strategy) else 0)


def inference_scope(strategy: tf.distribute.Strategy):
    """The scope models that run Keras' ``predict`` are made in.

    Under ``MirroredStrategy``, its scope: ``predict`` then splits every batch
    across the GPUs (feature extraction included). Across workers, no scope:
    Keras would shard the images across the workers, while every worker needs
    every feature, so each one extracts them on its own devices.
    """
    return _no_scope() if is_multi_worker(strategy) else strategy.scope()


def local_predictions(model: "keras.Model", strategy: tf.distribute.Strategy) -> None:
    """Make ``model.predict`` run on this worker alone when it was built under a multi-worker scope."""
    if is_multi_worker(strategy):
        tf_compat.detach_strategy(model)


def with_loss_scaling(optimizer: keras.optimizers.Optimizer, model: "keras.Model") -> keras.optimizers.Optimizer:
    """The optimizer, wrapped for dynamic loss scaling when ``model`` computes in float16.

    Under mixed precision (see :mod:`tlstudio.core.train.acceleration`) small float16
    gradients would underflow to zero; ``Model.compile`` adds this wrapper
    itself, a custom loop has to.
    """
    if any(getattr(layer, "compute_dtype", "float32") == "float16" for layer in tf_compat.all_layers(model)):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


@contextmanager
def device_faults(strategy: tf.distribute.Strategy, batch_size: int) -> Iterator[None]:
    """Turn running out of device memory, and a lost worker, into TrainingErrors that say what to do.

    Out of memory, the run stops (it is not retried with a smaller batch,
    which would silently change what the recipe trains) with the batch size
    to try: half the current one.
    """
    try:
        yield
    except tf.errors.ResourceExhaustedError:
        count = replicas(strategy)
        where = f" on each of the {count} replicas" if count > 1 else ""
        smaller = max(1, batch_size // 2)
        raise TrainingError(
            f"Training stopped: the device ran out of memory with batch size {batch_size}{where}. "
            f"Try batch size {smaller} (--batch-size {smaller}), a smaller input size or an earlier cut tensor. "
            f"Received: batch_size={batch_size}."
        ) from None
    except _CLUSTER_FAULTS as error:
        if not is_multi_worker(strategy):
            raise
        raise TrainingError(
            f"Training stopped: lost contact with another worker of the cluster ({_first_line(error)}). "
            f"A worker stopped, crashed or took longer than {cluster.WORKER_TIMEOUT_ENV} seconds for one step; "
            "check every worker's output and start all of them again."
        ) from None


def agree(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """Whether ``flag`` is true on any worker; every worker gets the same answer.

    Workers must stop together: one that leaves the loop alone would leave
    the others waiting in their next step.
    """
    if not is_multi_worker(strategy):
        return flag
    value = strategy.experimental_distribute_values_from_function(lambda _: tf.constant(float(flag)))
    return float(strategy.reduce(_SUM, value, axis=None)) > 0


def worker_share(strategy: tf.distribute.Strategy) -> tuple[int, int]:
    """``(this worker's position, how many workers)``: ``(0, 1)`` outside a multi-worker run.

    Workers have the same number of devices each (the strategy requires it),
    so a worker's position is its first replica's id over that number.
    """
    if not is_multi_worker(strategy):
        return 0, 1
    local = len(strategy.extended.worker_devices)
    ids: list[int] = []

    def note(context: tf.distribute.experimental.ValueContext) -> tf.Tensor:
        ids.append(int(context.replica_id_in_sync_group))
        return tf.constant(0.0)

    strategy.experimental_distribute_values_from_function(note)
    return min(ids) // local, replicas(strategy) // local


GATHER_ROWS = 4096
"""Rows each worker gives to one all-gather of :func:`gather_rows`."""


def gather_rows(strategy: tf.distribute.Strategy, rows: np.ndarray, positions: np.ndarray, count: int) -> np.ndarray:
    """Every worker's ``rows`` put at their ``positions`` of ``count`` rows, on every worker.

    Each worker gives its own share (its first device does; the others give
    no rows) to all-gathers of :data:`GATHER_ROWS` rows at a time, and the
    positions its rows belong at with them, so the result does not depend on
    the order of the workers, and a worker holds its share, the result and
    one gathered chunk, not every row twice.
    """
    if not is_multi_worker(strategy):
        return rows
    different = TrainingError(
        "The workers of the cluster extracted different images: give every worker the same image folders "
        "and the same project, then start all of them again."
    )
    # Every worker sees the same gathered sizes and positions, so all make the same collective calls and
    # reach the same verdict: none may stop early while another waits in an all-gather.
    sizes = _gather_first_device(strategy, np.asarray([[len(rows), count]], dtype=np.int64))
    if len(set(sizes[:, 1].tolist())) != 1:
        raise different
    gathered = np.empty((count, *rows.shape[1:]), dtype=rows.dtype)
    filled = np.zeros(count, dtype=np.int64)
    all_inside = True
    for start in range(0, int(sizes[:, 0].max()), GATHER_ROWS):
        chunk = slice(start, start + GATHER_ROWS)
        chunk_positions = _gather_first_device(strategy, positions[chunk])
        chunk_rows = _gather_first_device(strategy, rows[chunk])
        inside = (chunk_positions >= 0) & (chunk_positions < count)
        all_inside = all_inside and bool(inside.all())  # a wrong chunk does not end the calls early
        gathered[chunk_positions[inside]] = chunk_rows[inside]
        np.add.at(filled, chunk_positions[inside], 1)
    if not all_inside or not np.all(filled == 1):
        raise different
    return gathered


def _gather_first_device(strategy: tf.distribute.Strategy, values: np.ndarray) -> np.ndarray:
    """Each worker's ``values`` (from its first device; its other devices give none), concatenated."""
    given: list[bool] = []

    def share(_context: tf.distribute.experimental.ValueContext) -> tf.Tensor:
        first = not given
        given.append(True)
        return tf.constant(values if first else values[:0])

    return strategy.gather(strategy.experimental_distribute_values_from_function(share), axis=0).numpy()


class TrainingSteps:
    """Compiled training and evaluation steps for one model and optimizer on one strategy.

    Both return, summed over every replica, ``[loss sum, correct predictions,
    images]`` for the batch, so the caller can keep running means exactly.
    The training loss is sparse categorical crossentropy on the model's
    probabilities, each image weighted by its class weight when
    ``class_weights`` is given (one weight per label); the reported loss is
    that weighted loss, accuracy is unweighted. Evaluation never weighs.
    """

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        model: "keras.Model",
        optimizer: keras.optimizers.Optimizer,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.variables = list(model.trainable_variables)
        with strategy.scope():
            optimizer.build(self.variables)
        self.class_weights = None if class_weights is None else tf.constant(class_weights, tf.float32)
        self._train = tf.function(self._train_step, reduce_retracing=True)
        self._evaluate = tf.function(self._evaluate_step, reduce_retracing=True)

    def distribute(
        self, dataset: "tf.data.Dataset | pipeline.FeatureBatches", global_batch: int, count: int | None = None
    ) -> "tf.distribute.DistributedDataset | pipeline.FeatureBatches":
        """``dataset`` in global batches of ``global_batch``, split across the replicas.

        With ``count`` (training data), the batches are :func:`steps_per_epoch`'s.
        Across workers the images are sharded by element: each worker's share
        of a global batch is part of the same batch one process would see.
        Features in memory on one device are read straight from memory.
        """
        if isinstance(dataset, pipeline.FeatureBatches):
            if replicas(self.strategy) == 1 and dataset.batch_size == global_batch:
                return dataset  # one device: batches straight from memory
            dataset = dataset.dataset()
        drop = count is not None and steps_per_epoch(count, global_batch, self.strategy) == count // global_batch
        dataset = dataset.rebatch(global_batch, drop_remainder=drop)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return self.strategy.experimental_distribute_dataset(dataset.with_options(options))

    def trace(self, train_batches, val_batches) -> None:
        """Trace both steps now, once each, for batches of any size, before the first batch.

        Traced from the datasets' element specs (batch dimension unknown), so
        the last, smaller batch of an epoch reuses the same graph instead of
        tracing another one mid-epoch. Tracing is Python work that holds the
        interpreter lock for a while; doing it here, before the phase starts,
        keeps it out of the epochs.
        """
        self._train.get_concrete_function(train_batches.element_spec)
        self._evaluate.get_concrete_function(val_batches.element_spec)

    def train(self, batch) -> tuple[list[float], float]:
        """One optimisation step on a batch from :meth:`distribute`: the batch's ``[loss sum, correct,
        images]`` and the learning rate of the next step (read in the step: an eager read costs more)."""
        *sums, learning_rate = self._train(batch).numpy().tolist()
        return sums, learning_rate

    def evaluate(self, batch) -> list[float]:
        """Loss and accuracy sums on a batch from :meth:`distribute`, weights unchanged."""
        return self._evaluate(batch).numpy().tolist()

    def _train_step(self, batch):
        sums = self.strategy.reduce(_SUM, self.strategy.run(self._replica_train, args=batch), axis=None)
        return tf.concat([sums, [tf.cast(self.optimizer.learning_rate, tf.float32)]], axis=0)

    def _evaluate_step(self, batch):
        return self.strategy.reduce(_SUM, self.strategy.run(self._replica_evaluate, args=batch), axis=None)

    def _replica_train(self, images, labels):
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        global_count = tf.distribute.get_replica_context().all_reduce(_SUM, count)
        with tf.GradientTape() as tape:
            probabilities = tf.cast(self.model(images, training=True), tf.float32)
            per_image = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
            if self.class_weights is not None:
                per_image = per_image * tf.gather(self.class_weights, labels)
            loss = tf.nn.compute_average_loss(per_image, global_batch_size=tf.cast(global_count, tf.int64))
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, self.variables)
        self.optimizer.apply_gradients(zip(gradients, self.variables))
        return _sums(per_image, labels, probabilities, count)

    def _replica_evaluate(self, images, labels):
        probabilities = tf.cast(self.model(images, training=False), tf.float32)
        per_image = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
        return _sums(per_image, labels, probabilities, tf.cast(tf.shape(labels)[0], tf.float32))


def _sums(per_image, labels, probabilities, count):
    predicted = tf.argmax(probabilities, axis=-1, output_type=labels.dtype)
    correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
    return tf.stack([tf.reduce_sum(per_image), correct, count])


@contextmanager
def _no_scope() -> Iterator[None]:
    yield


def _configure_coordination(config: cluster.ClusterConfig, seconds: float) -> None:
    """Give TensorFlow's cluster registration the worker timeout instead of its default hour.

    ``MultiWorkerMirroredStrategy`` configures the coordination service itself
    unless one is configured already; this is its configuration with the
    timeout added.
    """
    leader = "chief" if "chief" in config.jobs else "worker"
    tf_compat.configure_coordination_service(
        f"/job:{leader}/replica:0/task:0",
        int(seconds * 1000),
        {job: len(addresses) for job, addresses in config.jobs.items()},
    )


_exit_on_hang = False


def exit_on_hang(enabled: bool) -> None:
    """Let a hung cluster start-up end the process (the command line only; the app's process never exits so)."""
    global _exit_on_hang
    _exit_on_hang = bool(enabled)


@contextmanager
def _deadline(seconds: float, config: cluster.ClusterConfig) -> Iterator[None]:
    """Say clearly when joining the cluster blocks past ``seconds``; end the process only where allowed.

    The workers answered a moment before, so this only fires when one dies
    while they start. TensorFlow's chief then waits in C++ without a limit
    and ignores signals, so for the command line (:func:`exit_on_hang`)
    exiting is the only way not to hang; the app never kills its own process.
    """

    def give_up() -> None:
        sys.stderr.write(
            f"tlstudio: error: {config.name} at {config.address} could not join the cluster within {seconds:g} s: "
            f"another worker answered, then stopped before TensorFlow connected to it. Start every worker again; "
            f"{cluster.WORKER_TIMEOUT_ENV} sets how long to wait.\n"
        )
        sys.stderr.flush()
        if _exit_on_hang:
            os._exit(2)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "message", "") or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
