"""Strategies and the training steps: several replicas train as one device does.

Two logical CPU devices stand in for two GPUs. They must be configured before
TensorFlow initialises its devices, which the test process did long ago, so
that part runs in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tlstudio.core.train import distribute
from tlstudio.core.spec.errors import TrainingError

_MIRRORED = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from tlstudio.core.train import runs, training
    from tlstudio.core.spec.recipe import BaseSpec, DataSpec, HeadSpec, Recipe, TrainSpec
    from tlstudio.core.data.samples import make_sample_folders, make_tiny_vgg

    root = make_sample_folders(sys.argv[1])

    def run(batch_size, strategy, head, **settings):
        recipe = Recipe(
            data=DataSpec(folders=(str(root),)),
            base=BaseSpec(name="vgg16", weights="none", input_size=32),
            head=head,
            training=TrainSpec(epochs=3, batch_size=batch_size, learning_rate=1e-2, early_stopping_patience=0,
                               **settings),
        )
        result = training.train(recipe, base_model=make_tiny_vgg(), strategy=strategy)
        return {"history": result.history, "metrics": result.metrics, "run_dir": str(result.run_dir)}

    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    plain = HeadSpec(batch_norm=False)
    print(json.dumps({
        "one": run(8, None, plain),
        "two": run(4, two, plain),
        "steps": [training.distribute.steps_per_epoch(n, 8, two) for n in (30, 32, 33)],
        "tuned": run(4, two, HeadSpec(), augmentation=True, fine_tune_epochs=1, fine_tune_layers=2,
                     class_weights=True, finalize_batch_norm=True),
    }))
    """
)


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """Runs on one device (batch 8) and on two replicas (batch 4 each), in one subprocess."""
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED, str(tmp_path_factory.mktemp("data") / "images")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_two_replicas_train_as_one_device_with_the_same_global_batch(mirrored):
    one, two = mirrored["one"]["history"], mirrored["two"]["history"]
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert mirrored["two"]["metrics"]["val_accuracy"] == pytest.approx(mirrored["one"]["metrics"]["val_accuracy"])


def test_two_replicas_fine_tune_with_augmentation_and_batch_norm(mirrored):
    tuned = mirrored["tuned"]
    assert len(tuned["history"]["loss"]) == 4
    assert all(np.isfinite(value) for values in tuned["history"].values() for value in values)
    assert tuned["history"]["learning_rate"][-1] == pytest.approx(1e-3)


def test_a_last_batch_too_small_for_every_replica_is_left_out(mirrored):
    assert mirrored["steps"] == [4, 4, 4]
    assert distribute.steps_per_epoch(33, 8, tf.distribute.get_strategy()) == 5


def test_one_device_is_the_default_strategy():
    strategy = distribute.training_strategy()
    assert distribute.replicas(strategy) == 1
    assert distribute.is_chief(strategy)
    assert not distribute.is_multi_worker(strategy)
    assert distribute.agree(strategy, True) and not distribute.agree(strategy, False)


def test_out_of_memory_stops_with_a_smaller_batch_size():
    with pytest.raises(TrainingError, match=r"ran out of memory with batch size 32.*Try batch size 16 \(--batch-size 16\)"):
        with distribute.device_faults(tf.distribute.get_strategy(), 32):
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")


def test_lost_workers_are_only_translated_across_machines():
    with pytest.raises(tf.errors.UnavailableError):
        with distribute.device_faults(tf.distribute.get_strategy(), 8):
            raise tf.errors.UnavailableError(None, None, "socket closed")


def test_mixed_precision_models_get_loss_scaling():
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert not isinstance(distribute.with_loss_scaling(keras.optimizers.SGD(0.1), plain),
                          keras.optimizers.LossScaleOptimizer)
    inputs = keras.Input((4,))
    mixed = keras.Model(inputs, keras.layers.Dense(2, dtype="mixed_float16")(inputs))
    assert isinstance(distribute.with_loss_scaling(keras.optimizers.SGD(0.1), mixed),
                      keras.optimizers.LossScaleOptimizer)


def test_training_steps_weigh_classes_and_average_over_the_batch():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    strategy = tf.distribute.get_strategy()
    steps = distribute.TrainingSteps(strategy, model, keras.optimizers.SGD(0.0), class_weights=[1.0, 3.0])
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1], dtype=np.int32)
    data = steps.distribute(tf.data.Dataset.from_tensor_slices((x, y)).batch(5), 5)
    batch = next(iter(data))
    (loss_sum, correct, count), learning_rate = steps.train(batch)
    assert learning_rate == 0.0
    probabilities = model.predict(x, verbose=0)
    per_image = -np.log(probabilities[np.arange(5), y])
    assert count == 5
    assert loss_sum == pytest.approx(float((per_image * np.where(y == 1, 3.0, 1.0)).sum()), rel=1e-5)
    assert correct == float((probabilities.argmax(axis=1) == y).sum())
    assert steps.evaluate(batch)[0] == pytest.approx(float(per_image.sum()), rel=1e-5)


def test_a_hung_cluster_start_never_exits_the_apps_process(monkeypatch, capsys):
    import time

    from tlstudio.core.train import cluster

    exits = []
    monkeypatch.setattr(distribute.os, "_exit", exits.append)
    config = cluster.read_tf_config({"TF_CONFIG": json.dumps(
        {"cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}, "task": {"type": "worker", "index": 0}})})
    distribute.exit_on_hang(False)
    with distribute._deadline(0.05, config):
        time.sleep(0.3)
    assert exits == [] and "could not join the cluster" in capsys.readouterr().err
    distribute.exit_on_hang(True)
    try:
        with distribute._deadline(0.05, config):
            time.sleep(0.3)
    finally:
        distribute.exit_on_hang(False)
    assert exits == [2]


def test_features_on_one_device_are_read_from_memory_and_each_step_traced_once():
    """A head on cached features skips tf.data on one device; the last, smaller batch reuses the trace."""
    from tlstudio.core.data import pipeline

    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    steps = distribute.TrainingSteps(tf.distribute.get_strategy(), model, keras.optimizers.SGD(0.1), None)
    x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    y = (np.arange(50) % 3).astype(np.int32)
    train = steps.distribute(pipeline.feature_batches(x, y, 8, shuffle_seed=7), 8, 50)
    val = steps.distribute(pipeline.feature_batches(x, y, 8), 8)
    assert isinstance(train, pipeline.FeatureBatches)
    steps.trace(train, val)
    counted = []
    for _ in range(2):
        counted.append(sum(steps.train(batch)[0][2] for batch in train))
        assert sum(steps.evaluate(batch)[2] for batch in val) == 50
    assert counted == [50, 50]
    assert steps._train.experimental_get_tracing_count() == 1
    assert steps._evaluate.experimental_get_tracing_count() == 1


def _two_workers_gather(monkeypatch, counts: tuple[int, int], chunk: int) -> tuple[dict, dict]:
    """``gather_rows`` on two simulated workers (threads) whose all-gathers meet at a barrier; each worker
    gives every other row of its own ``count``. Returns each worker's result (or error) and its calls."""
    import threading

    slots: list = [None, None]
    barrier = threading.Barrier(2, timeout=20)
    calls = {0: 0, 1: 0}

    def all_gather(worker, values):
        calls[worker] += 1
        slots[worker] = np.asarray(values)
        barrier.wait()
        gathered = np.concatenate(slots)
        barrier.wait()
        return gathered

    monkeypatch.setattr(distribute, "GATHER_ROWS", chunk)
    monkeypatch.setattr(distribute, "is_multi_worker", lambda strategy: True)
    monkeypatch.setattr(distribute, "_gather_first_device", all_gather)
    results: dict = {}

    def worker(index: int) -> None:
        positions = np.arange(index, counts[index], 2, dtype=np.int64)
        try:
            results[index] = distribute.gather_rows(index, positions.astype(np.float32)[:, None] * 10, positions,
                                                    counts[index])
        except (TrainingError, threading.BrokenBarrierError) as error:
            results[index] = error

    threads = [threading.Thread(target=worker, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, calls


def test_gathering_rows_in_chunks_puts_every_row_in_place(monkeypatch):
    results, calls = _two_workers_gather(monkeypatch, (11, 11), chunk=2)
    for index in (0, 1):
        np.testing.assert_array_equal(results[index][:, 0], np.arange(11, dtype=np.float32) * 10)
    assert calls[0] == calls[1] == 1 + 2 * 3  # sizes, then positions and rows for 3 chunks of at most 2


def test_workers_that_see_different_images_all_say_so_and_none_waits_forever(monkeypatch):
    results, calls = _two_workers_gather(monkeypatch, (10, 14), chunk=4)
    assert all(isinstance(results[index], TrainingError) for index in (0, 1)), results
    assert "different images" in str(results[0]) and calls[0] == calls[1]
