"""Pins each private TensorFlow/Keras behaviour that tlstudio.core.tf_compat wraps.

When an upgrade changes one of them, the test named after it fails here first.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import keras
import pytest
import tensorflow as tf

from tlstudio.core import tf_compat


def _two_branch_model() -> keras.Model:
    image = keras.Input((8, 8, 3), name="image")
    shared = keras.layers.Conv2D(3, 3, padding="same", name="shared")
    first = shared(image)
    second = shared(first)
    joined = keras.layers.Add(name="join")([first, second])
    return keras.Model(image, keras.layers.GlobalAveragePooling2D(name="pool")(joined), name="two_calls")


def test_keras_history_names_the_layer_call_and_output_index():
    model = _two_branch_model()
    shared = model.get_layer("shared")
    join_inputs = tf_compat.call_node(model.get_layer("join").output).input_tensors
    operation, node_index, tensor_index = tf_compat.keras_history(join_inputs[1])
    assert operation is shared
    assert (node_index, tensor_index) == (1, 0)
    assert tf_compat.producer(model.outputs[0]) is model.get_layer("pool")


def test_inbound_nodes_lists_each_call_in_order():
    model = _two_branch_model()
    nodes = tf_compat.inbound_nodes(model.get_layer("shared"))
    assert len(nodes) == 2
    assert nodes[0].input_tensors[0] is model.inputs[0]
    assert nodes[1].input_tensors[0] is nodes[0].outputs[0]


def test_call_node_gives_the_inputs_a_tensor_was_computed_from():
    model = _two_branch_model()
    node = tf_compat.call_node(model.outputs[0])
    assert node.operation is model.get_layer("pool")
    assert tf_compat.producer(node.input_tensors[0]) is model.get_layer("join")


def test_all_layers_walks_into_nested_models():
    inner = _two_branch_model()
    image = keras.Input((8, 8, 3))
    outer = keras.Model(image, keras.layers.Dense(2, name="out")(inner(image)), name="outer")
    names = [layer.name for layer in tf_compat.all_layers(outer)]
    assert names[0] == "outer"
    assert {"two_calls", "shared", "join", "pool", "out"} <= set(names)
    without_self = [layer.name for layer in tf_compat.all_layers(outer, include_self=False)]
    assert "outer" not in without_self and "shared" in without_self
    shallow = [layer.name for layer in tf_compat.all_layers(outer, include_self=False, recursive=False)]
    assert "two_calls" in shallow and "shared" not in shallow


def test_a_missing_internal_is_named_in_a_compat_error():
    with pytest.raises(tf_compat.CompatError, match="_keras_history"):
        tf_compat.keras_history(object())
    with pytest.raises(tf_compat.CompatError, match="_flatten_layers"):
        tf_compat.all_layers(object())


def test_in_multi_worker_mode_is_false_without_a_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert tf_compat.in_multi_worker_mode(strategy) is False
    assert tf_compat.in_multi_worker_mode(tf.distribute.get_strategy()) is False


def test_detach_strategy_makes_predict_run_outside_the_building_scope():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert model.distribute_strategy is strategy
    tf_compat.detach_strategy(model)
    assert model.distribute_strategy is not strategy
    assert model.predict(tf.ones((3, 2)), verbose=0).shape == (3, 1)
    with pytest.raises(tf_compat.CompatError, match="_distribute_strategy"):
        tf_compat.detach_strategy(object())


def test_configure_coordination_service_sets_the_register_timeout():
    # A fresh process: the configuration is global to TensorFlow's context.
    script = textwrap.dedent(
        """
        from tlstudio.core import tf_compat
        assert tf_compat.configure_coordination_service(
            "/job:chief/replica:0/task:0", 12_000, {"chief": 1, "worker": 2}
        )
        config = tf_compat.coordination_service_config()
        jobs = {job.name: job.num_tasks for job in config.coordinated_job_list}
        print(config.service_type, config.cluster_register_timeout_in_ms, sorted(jobs.items()))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[-2] == "standalone 12000 [('chief', 1), ('worker', 2)]"
