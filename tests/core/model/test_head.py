"""The head: pooling, the batch-norm toggle, dropout and the softmax layer."""

from __future__ import annotations

import keras
import numpy as np

from tlstudio.core.model.head import build_head, head_bn_layers
from tlstudio.core.spec.recipe import HeadSpec


def _head_model(spec: HeadSpec, shape=(4, 4, 8), num_classes: int = 3) -> keras.Model:
    features = keras.Input(shape, name="features")
    return keras.Model(features, build_head(features, num_classes, spec))


def _names(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers[1:]]


def test_batch_norm_on():
    spec = HeadSpec(hidden_units=(16, 8), dropout=0.3, batch_norm=True, bn_epsilon=1e-4, bn_momentum=0.9)
    model = _head_model(spec)
    assert _names(model) == [
        "head_pool", "head_bn",
        "head_dense_1", "head_bn_1", "head_relu_1",
        "head_dense_2", "head_bn_2", "head_relu_2",
        "head_dropout", "head_predictions",
    ]  # fmt: skip
    assert isinstance(model.get_layer("head_pool"), keras.layers.GlobalAveragePooling2D)
    for index in (1, 2):
        assert model.get_layer(f"head_dense_{index}").use_bias is False
    norms = head_bn_layers(model)
    assert [layer.name for layer in norms] == ["head_bn", "head_bn_1", "head_bn_2"]
    assert all(layer.epsilon == 1e-4 and layer.momentum == 0.9 for layer in norms)
    assert model.get_layer("head_dropout").rate == 0.3
    predictions = model.get_layer("head_predictions")
    assert predictions.units == 3 and predictions.use_bias
    assert predictions.activation is keras.activations.softmax


def test_batch_norm_off():
    model = _head_model(HeadSpec(hidden_units=(16,), batch_norm=False))
    assert _names(model) == ["head_pool", "head_dense_1", "head_predictions"]
    dense = model.get_layer("head_dense_1")
    assert dense.use_bias is True and dense.activation is keras.activations.relu
    assert head_bn_layers(model) == []
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def test_default_batch_norm_settings():
    norms = head_bn_layers(_head_model(HeadSpec()))
    assert len(norms) == 1
    assert norms[0].epsilon == 1e-3 and norms[0].momentum == 0.99


def test_flatten_pooling_and_flat_features():
    flattened = _head_model(HeadSpec(pooling="flatten", batch_norm=False))
    assert _names(flattened) == ["head_flatten", "head_predictions"]
    assert flattened.get_layer("head_predictions").kernel.shape == (4 * 4 * 8, 3)
    flat = _head_model(HeadSpec(batch_norm=False), shape=(12,))
    assert _names(flat) == ["head_predictions"]


def test_output_is_float32_probabilities():
    model = _head_model(HeadSpec(hidden_units=(8,), dropout=0.5), num_classes=4)
    features = np.random.default_rng(0).normal(size=(5, 4, 4, 8)).astype("float32")
    probabilities = model.predict(features, verbose=0)
    assert probabilities.shape == (5, 4) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
