"""The fast paths stay correct: decoded-image caching within its budget, mixed precision, XLA."""

from __future__ import annotations

import gc

import keras
import numpy as np
import pytest

from tlstudio.core.train import acceleration, batch_norm, runs, training
from tlstudio.core.model import classifier
from tlstudio.core.data import pipeline
from tlstudio.core.data.dataset import scan_dataset
from tlstudio.core.spec.errors import UserError
from tlstudio.core.spec.recipe import BaseSpec, DataSpec, HeadSpec, Recipe, TrainSpec
from tlstudio.core.data.samples import make_tiny_vgg


@pytest.fixture
def items(image_root):
    return scan_dataset([image_root]).train


@pytest.fixture
def decodes(monkeypatch):
    """Counts calls to the image decoder."""
    calls = []
    original = pipeline.images.load_rgb

    def counting(path, size=None):
        calls.append(path)
        return original(path, size)

    monkeypatch.setattr(pipeline.images, "load_rgb", counting)
    return calls


def _epoch(dataset) -> np.ndarray:
    return np.concatenate([x.numpy() for x, _ in dataset])


def test_decoded_images_are_reused_in_later_epochs(items, decodes):
    batches = pipeline.image_batches(items, 3, 32, 8, shuffle=False, cache_decoded=True)
    first = _epoch(batches)
    assert len(decodes) == len(items)
    second = _epoch(batches)
    assert len(decodes) == len(items), "the second epoch decoded nothing"
    np.testing.assert_array_equal(first, second)


def test_the_decoded_cache_stays_within_its_budget(items, decodes, monkeypatch):
    per_image = 32 * 32 * 3
    monkeypatch.setenv(pipeline.DECODED_CACHE_ENV, str(10 * per_image / 2**20))
    gc.collect()
    before = pipeline.DecodedCache.reserved_bytes()
    batches = pipeline.image_batches(items, 3, 32, 8, shuffle=True, cache_decoded=True)
    assert pipeline.DecodedCache.reserved_bytes() - before <= 10 * per_image
    _epoch(batches)
    _epoch(batches)
    assert len(decodes) == 2 * len(items) - 10, "10 images kept, the others decoded each epoch"
    other = pipeline.image_batches(items, 3, 32, 8, shuffle=False, cache_decoded=True)
    _epoch(other)
    _epoch(other)
    assert len(decodes) == 4 * len(items) - 10, "the budget is shared, so the second pipeline keeps none"
    del batches, other
    gc.collect()
    assert pipeline.DecodedCache.reserved_bytes() == before


def test_a_bad_decoded_cache_budget_is_named(monkeypatch):
    monkeypatch.setenv(pipeline.DECODED_CACHE_ENV, "-3")
    with pytest.raises(UserError, match="TLSTUDIO_DECODED_CACHE_MB.*'-3'"):
        pipeline.decoded_cache_budget()


def test_mixed_precision_training_gives_float32_probabilities(image_root, tmp_path):
    recipe = Recipe(
        data=DataSpec(folders=(str(image_root),)),
        base=BaseSpec(name="vgg16", weights="none", input_size=32),
        head=HeadSpec(hidden_units=(8,)),
        training=TrainSpec(epochs=2, batch_size=8, learning_rate=1e-2, early_stopping_patience=0,
                           fine_tune_epochs=1),
    )
    with acceleration.dtype_policy("mixed_float16"):
        base = make_tiny_vgg()
        assert base.get_layer("block1_conv1").compute_dtype == "float16"
        result = training.train(recipe, base_model=base, out_dir=tmp_path / "run")
    assert keras.mixed_precision.global_policy().name == "float32"
    assert all(np.isfinite(result.history["loss"]))
    model = runs.load_run(result.run_dir).load_model()
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    probabilities = model(images, training=False)
    assert probabilities.dtype == "float32"
    np.testing.assert_allclose(np.asarray(probabilities).sum(axis=1), 1.0, rtol=1e-5)


def test_xla_gives_the_same_outputs_and_losses_on_cpu():
    base = make_tiny_vgg()
    model = classifier.build_classifier(base, "block3_pool:0", 3, HeadSpec(hidden_units=(8,)), "caffe")
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (16, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 16)
    plain = model.predict(images, verbose=0)
    frozen = batch_norm.split_head(model)[0]
    frozen_plain = frozen.predict(images, verbose=0)
    losses = {}
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        copy.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy", jit_compile=jit)
        assert copy.jit_compile is jit
        np.testing.assert_allclose(copy.predict(images, verbose=0), plain, rtol=1e-4, atol=1e-5)
        losses[jit] = copy.fit(images, labels, batch_size=8, epochs=2, shuffle=False, verbose=0).history["loss"]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(acceleration.XLA_ENV, "1")
        acceleration.configure_jit(frozen)
        assert frozen.jit_compile is True
        np.testing.assert_allclose(frozen.predict(images, verbose=0), frozen_plain, rtol=1e-4, atol=1e-4)


def test_precision_and_xla_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(acceleration.PRECISION_ENV, "mixed_float16")
    assert acceleration.choose_policy() == "mixed_float16"
    monkeypatch.setenv(acceleration.PRECISION_ENV, "auto")
    assert acceleration.choose_policy() == "float32", "no GPU is visible in the tests"
    monkeypatch.setenv(acceleration.PRECISION_ENV, "half")
    with pytest.raises(UserError, match="TLSTUDIO_PRECISION.*'half'"):
        acceleration.choose_policy()
    monkeypatch.delenv(acceleration.XLA_ENV, raising=False)
    assert acceleration.jit_compile() == "auto"
    monkeypatch.setenv(acceleration.XLA_ENV, "0")
    assert acceleration.jit_compile() is False
    monkeypatch.setenv(acceleration.XLA_ENV, "maybe")
    with pytest.raises(UserError, match="TLSTUDIO_XLA"):
        acceleration.jit_compile()
