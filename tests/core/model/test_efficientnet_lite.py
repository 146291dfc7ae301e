"""EfficientNet-Lite0: the torch-free state-dict reader and the Keras port.

The port is proved on scikit-image's bundled photos: the cat ``chelsea`` and
the cup of ``coffee`` must get their ImageNet classes in the top 5.
"""

from __future__ import annotations

import collections
import os
import pickle
import sys
import types

import keras
import numpy as np
import pytest
import skimage.data
from PIL import Image

from tlstudio.core.model import efficientnet_lite
from tlstudio.core.spec import paths
from tlstudio.core.model.backbones import build_base
from tlstudio.core.model.lite0_weights import bundled_weights_path
from tlstudio.core.model.efficientnet_lite import STAGES, build_efficientnet_lite0
from tlstudio.core.spec.errors import WeightsError
from tlstudio.core.model.preprocess import Preprocess
from tlstudio.core.spec.recipe import BaseSpec
from tlstudio.core.model.torch_pickle import MAGIC_NUMBER, PROTOCOL_VERSION, load_state_dict

CAT_CLASSES = set(range(281, 286))
ESPRESSO_OR_CUP = {967, 968}


# --- writing legacy files without torch, to test the reader ------------------------------------

class _Storage:
    def __init__(self, key: str, data: np.ndarray) -> None:
        self.key, self.data = key, data


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple) -> None:
        self.args = (storage, offset, shape, stride)

    def __reduce__(self):
        storage, offset, shape, stride = self.args
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (storage, offset, shape, stride, False, collections.OrderedDict())


class _Evil:
    def __reduce__(self):
        return os.system, ("touch tlstudio_was_here",)


@pytest.fixture
def fake_torch(monkeypatch):
    """Just enough of a ``torch`` module for pickle to write the names torch writes."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only used as a name")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def _write_legacy(path, obj, storages: list[_Storage], torch, header_obj=MAGIC_NUMBER) -> None:
    class _Pickler(pickle.Pickler):
        def persistent_id(self, value):
            if isinstance(value, _Storage):
                kind = torch.LongStorage if value.data.dtype == np.int64 else torch.FloatStorage
                return ("storage", kind, value.key, "cpu", value.data.size, None)
            return None

    with open(path, "wb") as file:
        pickle.dump(header_obj, file, protocol=2)
        pickle.dump(PROTOCOL_VERSION, file, protocol=2)
        pickle.dump({"protocol_version": PROTOCOL_VERSION, "little_endian": True}, file, protocol=2)
        _Pickler(file, protocol=2).dump(obj)
        pickle.dump([s.key for s in storages], file, protocol=2)
        for storage in storages:
            file.write(storage.data.size.to_bytes(8, "little"))
            file.write(storage.data.astype(storage.data.dtype.newbyteorder("<")).tobytes())


def test_reader_rebuilds_strided_views_and_scalars(tmp_path, fake_torch):
    shared = _Storage("0", np.arange(10, dtype=np.float32))
    count = _Storage("1", np.array([7], dtype=np.int64))
    state = collections.OrderedDict(
        transposed=_Tensor(shared, 0, (3, 2), (1, 3)),
        tail=_Tensor(shared, 6, (4,), (1,)),
        steps=_Tensor(count, 0, (), ()),
    )
    path = tmp_path / "tiny.pth"
    _write_legacy(path, state, [shared, count], fake_torch)
    loaded = load_state_dict(path)
    np.testing.assert_array_equal(loaded["transposed"], np.arange(6, dtype=np.float32).reshape(2, 3).T)
    np.testing.assert_array_equal(loaded["tail"], [6, 7, 8, 9])
    assert loaded["steps"].shape == () and loaded["steps"] == 7 and loaded["steps"].dtype == np.int64


@pytest.mark.parametrize("where", ["state", "header"])
def test_reader_refuses_code(tmp_path, fake_torch, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    if where == "state":
        _write_legacy(path, collections.OrderedDict(x=_Evil()), [], fake_torch)
    else:
        _write_legacy(path, collections.OrderedDict(), [], fake_torch, header_obj=_Evil())
    with pytest.raises(WeightsError, match=r"refers to (posix|os)\.system.*refuses"):
        load_state_dict(path)
    assert not (tmp_path / "tlstudio_was_here").exists()


def test_reader_rejects_other_files(tmp_path):
    path = tmp_path / "zip.pth"
    path.write_bytes(b"PK\x03\x04 a zip-format checkpoint")
    with pytest.raises(WeightsError, match="not a legacy PyTorch weights file"):
        load_state_dict(path)
    with pytest.raises(WeightsError, match="Cannot open"):
        load_state_dict(tmp_path / "missing.pth")


# --- the bundled weights and the Keras port ---------------------------------------------------

def test_bundled_state_dict_matches_the_stage_table():
    state = load_state_dict(bundled_weights_path())
    assert len(state) == 296
    assert not [k for k in state if "_se_" in k], "Lite has no squeeze-and-excitation"
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    block = 0
    in_filters = 32
    for stage in STAGES:
        for _ in range(stage.repeats):
            key = f"_blocks.{block}"
            assert state[f"{key}._depthwise_conv.weight"].shape == (in_filters * stage.expand, 1, stage.kernel, stage.kernel)
            assert state[f"{key}._project_conv.weight"].shape[0] == stage.filters
            assert (f"{key}._expand_conv.weight" in state) == (stage.expand != 1)
            in_filters, block = stage.filters, block + 1
    assert f"_blocks.{block}._depthwise_conv.weight" not in state


def _photo(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((224, 224), Image.BILINEAR), dtype=np.float32)


def test_imagenet_port_recognises_the_sample_photos(monkeypatch):
    model = build_efficientnet_lite0(224, include_top=True, weights="imagenet")
    images = np.stack([_photo(skimage.data.chelsea()), _photo(skimage.data.coffee())])
    probabilities = model.predict(keras.ops.convert_to_numpy(Preprocess("lite")(images)), verbose=0)
    cat_top5, coffee_top5 = (set(np.argsort(p)[::-1][:5].tolist()) for p in probabilities)
    assert cat_top5 & CAT_CLASSES, cat_top5
    assert coffee_top5 & ESPRESSO_OR_CUP, coffee_top5
    assert (paths.data_dir() / "weights" / efficientnet_lite.CACHE_NAME).is_file()

    def no_second_conversion(path):
        raise AssertionError("the converted weights should come from the cache")

    monkeypatch.setattr(efficientnet_lite, "load_state_dict", no_second_conversion)
    base = build_base(BaseSpec(name="efficientnet-lite0", weights="imagenet", input_size=96))
    assert base.layers[-1].name == "top_activation" and base.output.shape == (None, 3, 3, 1280)
    np.testing.assert_array_equal(base.get_layer("top_conv").kernel.numpy(), model.get_layer("top_conv").kernel.numpy())


def test_readable_layer_names_and_residual_adds():
    model = build_efficientnet_lite0(64, include_top=True, weights="none")
    names = [layer.name for layer in model.layers]
    for name in ("stem_conv", "stem_bn", "stem_activation", "block1a_dwconv", "block1a_project_conv",
                 "block2a_expand_conv", "block2b_add", "block7a_project_bn", "top_conv", "top_activation",
                 "avg_pool", "predictions"):
        assert name in names
    assert "block2a_add" not in names, "a block that changes shape has no skip"
    assert all(layer.epsilon == 1e-3 for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    assert model.output.shape == (None, 1000)


def test_weights_argument_is_checked():
    with pytest.raises(Exception, match="Received: weights='noisy-student'"):
        build_efficientnet_lite0(weights="noisy-student")
