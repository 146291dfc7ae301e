"""The classifier: preprocessing, a frozen cut base, the head; fine-tuning; saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tlstudio.core.model.classifier import build_classifier, unfreeze_for_fine_tuning
from tlstudio.core.spec.errors import DataError, RecipeError, TensorNameError
from tlstudio.core.spec.recipe import HeadSpec
from tlstudio.core.model.tensors import default_cut_tensor
from tlstudio.core.model.traced_names import graph_tensors


def _images(count: int = 4, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, size, size, 3)).astype("float32")


def _head_weights(model: keras.Model) -> set[int]:
    return {id(w) for layer in model.layers if layer.name.startswith("head_") for w in layer.trainable_weights}


def _bn_base() -> keras.Model:
    """A small base with batch norm, to see that it stays in inference mode."""
    inputs = keras.Input((16, 16, 3), name="input_layer")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    return keras.Model(inputs, x, name="bn_base")


def test_structure_and_frozen_base(tiny_vgg):
    model = build_classifier(tiny_vgg, "block2_pool:0", 3, HeadSpec(hidden_units=(8,)), "caffe")
    assert model.input.name == "image" and tuple(model.input.shape) == (None, 32, 32, 3)
    assert [layer.name for layer in model.layers[:3]] == ["image", "preprocess", "base"]
    assert model.get_layer("preprocess").mode == "caffe"
    base = model.get_layer("base")
    assert isinstance(base, keras.Model) and base.trainable is False
    assert base.output.shape == (None, 8, 8, 8)
    assert base.get_layer("block2_conv1") is tiny_vgg.get_layer("block2_conv1")
    assert {id(w) for w in model.trainable_weights} == _head_weights(model)
    assert len(model.trainable_weights) > 0
    probabilities = model.predict(_images(), verbose=0)
    assert probabilities.shape == (4, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_base_runs_in_inference_mode_even_when_training():
    model = build_classifier(_bn_base(), "relu2:0", 2, HeadSpec(batch_norm=False), "none")
    bn = model.get_layer("base").get_layer("bn1")
    before = bn.get_weights()
    images = _images(size=16)
    training = keras.ops.convert_to_numpy(model(images, training=True))
    inference = keras.ops.convert_to_numpy(model(images, training=False))
    np.testing.assert_allclose(training, inference, rtol=1e-6)
    for old, new in zip(before, bn.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_cut_on_flat_features(tiny_vgg_top):
    model = build_classifier(tiny_vgg_top, default_cut_tensor(tiny_vgg_top), 2, HeadSpec(), "caffe")
    assert model.get_layer("base").output.shape == (None, 16)
    assert [layer.name for layer in model.layers[3:]] == ["head_bn", "head_predictions"]
    assert model.predict(_images(2), verbose=0).shape == (2, 2)


def test_wrong_cut_and_too_few_classes(tiny_vgg):
    with pytest.raises(TensorNameError, match="block2_pool:0"):
        build_classifier(tiny_vgg, "block2_pool", 3, HeadSpec(), "caffe")
    with pytest.raises(DataError, match="num_classes=1"):
        build_classifier(tiny_vgg, "block2_pool:0", 1, HeadSpec(), "caffe")


def test_unfreeze_last_layers(tiny_vgg):
    model = build_classifier(tiny_vgg, "block3_pool:0", 3, HeadSpec(), "caffe")
    names = unfreeze_for_fine_tuning(model, layers=2)
    assert names == ["block3_conv2", "block3_conv3"]
    base = model.get_layer("base")
    expected = _head_weights(model) | {id(w) for n in names for w in base.get_layer(n).weights}
    assert {id(w) for w in model.trainable_weights} == expected
    assert unfreeze_for_fine_tuning(model, layers=1) == ["block3_conv3"]
    assert not base.get_layer("block3_conv2").trainable


def test_unfreeze_from_layer(tiny_vgg):
    model = build_classifier(tiny_vgg, "block3_pool:0", 3, HeadSpec(), "caffe")
    assert unfreeze_for_fine_tuning(model, layers=1, from_layer="block2_pool") == [
        "block3_conv1", "block3_conv2", "block3_conv3",
    ]  # fmt: skip


def test_unfreeze_keeps_base_batch_norm_frozen():
    model = build_classifier(_bn_base(), "relu2:0", 2, HeadSpec(), "none")
    names = unfreeze_for_fine_tuning(model, layers=5)
    assert names == ["conv1", "conv2"]
    base = model.get_layer("base")
    assert not base.get_layer("bn1").trainable and not base.get_layer("bn2").trainable
    trainable = {id(w) for w in model.trainable_weights}
    assert not trainable & {id(w) for w in base.get_layer("bn1").weights}


def test_unfreeze_errors_name_valid_layers(tiny_vgg):
    model = build_classifier(tiny_vgg, "block3_pool:0", 3, HeadSpec(), "caffe")
    with pytest.raises(RecipeError, match="'block3_conv1'") as caught:
        unfreeze_for_fine_tuning(model, layers=1, from_layer="block3_conv")
    assert "block1_conv1" in str(caught.value)
    with pytest.raises(RecipeError, match="a layer, not a tensor: use 'block3_conv1'"):
        unfreeze_for_fine_tuning(model, layers=1, from_layer="block3_conv1:0")
    with pytest.raises(RecipeError, match="nothing would be fine-tuned"):
        unfreeze_for_fine_tuning(model, layers=1, from_layer="block3_pool")
    with pytest.raises(RecipeError, match="no nested base"):
        unfreeze_for_fine_tuning(tiny_vgg, layers=1)


def test_save_and_load_round_trip(tiny_vgg, tmp_path):
    model = build_classifier(tiny_vgg, "block2_pool:0", 3, HeadSpec(hidden_units=(8,), dropout=0.2), "caffe")
    images = _images()
    expected = model.predict(images, verbose=0)
    path = tmp_path / "classifier.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), expected)
    assert loaded.get_layer("base").trainable is False
    assert {id(w) for w in loaded.trainable_weights} == _head_weights(loaded)
    assert unfreeze_for_fine_tuning(loaded, layers=1) == ["block2_conv2"]


def test_loaded_classifier_keeps_base_in_inference_mode(tmp_path):
    model = build_classifier(_bn_base(), "relu2:0", 2, HeadSpec(), "none")
    path = tmp_path / "bn.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    unfreeze_for_fine_tuning(loaded, layers=2)
    images = _images(size=16)
    bn = loaded.get_layer("base").get_layer("bn2")
    before = bn.get_weights()
    loaded(images, training=True)
    for old, new in zip(before, bn.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_graph_tensors_reach_into_the_base(tiny_vgg):
    model = build_classifier(tiny_vgg, "block2_pool:0", 3, HeadSpec(), "caffe")
    tensors = graph_tensors(model)
    assert "base/block1_conv1/Relu:0" in tensors["base"]
    assert tensors["image"] == ["image:0"]
    assert any(name.startswith("head_predictions/") for name in tensors["head_predictions"])
