"""Base models: the official weights table, building VGG and Lite0, the
preprocessing layer and loading the user's own model files safely."""

from __future__ import annotations

import inspect
import subprocess
import sys

import keras
import numpy as np
import pytest

from tlstudio.core.model import backbones
from tlstudio.core.model.backbones import (
    build_base,
    load_user_model,
    preprocessing_mode,
    weights_file,
    weights_status,
)
from tlstudio.core.spec.errors import ModelFileError, RecipeError, WeightsError
from tlstudio.core.model.preprocess import Preprocess
from tlstudio.core.spec.recipe import BaseSpec
from tlstudio.core.data.samples import make_tiny_vgg


# --- official weights -------------------------------------------------------------------------

@pytest.mark.parametrize("base", ["vgg16", "vgg19"])
def test_weights_table_matches_keras_source(base):
    module = getattr(keras.src.applications, base)
    source = inspect.getsource(module)
    top, notop = weights_file(base, True), weights_file(base, False)
    assert top.url == module.WEIGHTS_PATH and notop.url == module.WEIGHTS_PATH_NO_TOP
    assert f'"{top.md5}"' in source and f'"{notop.md5}"' in source
    assert top.filename == top.url.rsplit("/", 1)[1] and notop.filename == notop.url.rsplit("/", 1)[1]
    assert top.size_bytes > 500_000_000 > notop.size_bytes > 50_000_000


def test_documented_sizes():
    assert weights_file("vgg16", False).size_text == "58.9 MB"
    assert weights_file("vgg16", True).size_bytes == 553_467_096


def test_no_download_for_lite0_or_unknown():
    with pytest.raises(WeightsError, match="ship with TL Studio"):
        weights_file("efficientnet-lite0", False)
    with pytest.raises(WeightsError, match="Received: base='resnet'"):
        weights_file("resnet", False)


def test_weights_status(tmp_path):
    wf = weights_file("vgg16", False)
    assert weights_status("vgg16", False) == ("missing", None)
    cache = backbones.paths.keras_models_dir()
    cache.mkdir(parents=True)
    with open(cache / wf.filename, "wb") as file:
        file.truncate(wf.size_bytes)  # sparse: only the size is looked at
    assert weights_status("vgg16", False) == ("cached", cache / wf.filename)
    assert weights_status("vgg16", True) == ("missing", None)
    status, path = weights_status("efficientnet-lite0", False)
    assert status == "bundled" and path.name.endswith(".pth")


def test_weights_questions_do_not_import_tensorflow():
    code = (
        "import sys; from tlstudio.core.model import backbones; "
        "backbones.weights_status('efficientnet-lite0', False); backbones.weights_status('vgg16', True); "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- building bases ---------------------------------------------------------------------------

def test_vgg16_graph_at_224_without_weights():
    model = build_base(BaseSpec(name="vgg16", weights="none", input_size=224))
    assert model.get_layer("block5_pool").output.shape == (None, 7, 7, 512)
    assert model.layers[-1].name == "block5_pool"
    assert model.count_params() == 14_714_688


def test_vgg19_small_input_and_weights_file(tmp_path):
    random_init = build_base(BaseSpec(name="vgg19", weights="none", input_size=32))
    assert "block5_conv4" in [layer.name for layer in random_init.layers]
    path = tmp_path / "mine.weights.h5"
    random_init.save_weights(path)
    loaded = build_base(BaseSpec(name="vgg19", weights=str(path), input_size=32))
    np.testing.assert_array_equal(
        loaded.get_layer("block5_conv4").get_weights()[0], random_init.get_layer("block5_conv4").get_weights()[0]
    )


def test_vgg_errors(tmp_path):
    with pytest.raises(RecipeError, match="at least 32x32"):
        build_base(BaseSpec(name="vgg16", weights="none", input_size=16))
    with pytest.raises(WeightsError, match="does not exist"):
        build_base(BaseSpec(name="vgg16", weights=str(tmp_path / "nope.h5"), input_size=32))


def test_lite0_without_weights_and_preprocessing_modes():
    model = build_base(BaseSpec(name="efficientnet-lite0", weights="none", input_size=64))
    assert model.layers[-1].name == "top_activation"
    assert model.output.shape == (None, 2, 2, 1280)
    assert preprocessing_mode(BaseSpec(name="vgg19")) == "caffe"
    assert preprocessing_mode(BaseSpec(name="efficientnet-lite0")) == "lite"
    assert preprocessing_mode(BaseSpec(name="file", model_file="m.keras")) == "none"


# --- the user's own model files ---------------------------------------------------------------

def test_user_model_keras_and_h5(tiny_vgg_file, tmp_path):
    model = build_base(BaseSpec(name="file", model_file=str(tiny_vgg_file), input_size=32))
    assert model.get_layer("block3_pool").output.shape == (None, 4, 4, 8)
    legacy = tmp_path / "tiny.h5"
    make_tiny_vgg().save(legacy)
    assert load_user_model(legacy).get_layer("block1_conv1").filters == 4


def _lambda_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(2, 3)(x))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_user_model_with_lambda_is_refused(tmp_path, suffix):
    path = tmp_path / f"lambda{suffix}"
    _lambda_model().save(path)
    with pytest.raises(ModelFileError, match="refused for safety.*Lambda layer.*rebuild it without"):
        load_user_model(path)


def test_user_model_bad_files(tmp_path, tiny_vgg):
    with pytest.raises(ModelFileError, match="No model file"):
        load_user_model(tmp_path / "missing.keras")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ModelFileError, match="cannot be read as a .keras model"):
        load_user_model(junk)
    weights_only = tmp_path / "w.weights.h5"
    tiny_vgg.save_weights(weights_only)
    with pytest.raises(ModelFileError, match="only weights"):
        load_user_model(weights_only)
    with pytest.raises(ModelFileError, match="Received: a file ending in '.onnx'"):
        (tmp_path / "m.onnx").write_bytes(b"x")
        load_user_model(tmp_path / "m.onnx")
    with pytest.raises(ModelFileError, match="is a folder"):
        load_user_model(tmp_path)


def test_user_model_must_take_rgb_images(tmp_path):
    inputs = keras.Input((10,))
    path = tmp_path / "dense.keras"
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(path)
    with pytest.raises(ModelFileError, match=r"\(None, height, width, 3\)"):
        load_user_model(path)


# --- preprocessing ----------------------------------------------------------------------------

def test_caffe_matches_keras_vgg_preprocessing():
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 5, 7, 3)).astype("float32")
    expected = keras.applications.vgg16.preprocess_input(images.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(Preprocess("caffe")(images)), expected, atol=1e-4)


def test_lite_and_none_modes():
    images = np.array([[[[0.0, 127.0, 255.0]]]], dtype="float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(Preprocess("lite")(images)), [[[[-127 / 128, 0.0, 1.0]]]])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(Preprocess("none")(images)), images)
    with pytest.raises(RecipeError, match="Received: mode='imagenet'"):
        Preprocess("imagenet")


@pytest.mark.parametrize("mode", ["caffe", "lite"])
def test_preprocess_survives_keras_round_trip(tmp_path, mode):
    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, Preprocess(mode, name="preprocess")(inputs))
    path = tmp_path / "p.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    images = np.random.default_rng(1).uniform(0, 255, size=(1, 6, 6, 3)).astype("float32")
    assert loaded.get_layer("preprocess").mode == mode
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)
