"""The state-dict reader against corrupt and hostile files: every failure a WeightsError.

Files are written without torch: a fake ``torch`` module gives pickle the names
torch writes, and the storages follow the pickle as in the legacy format.
"""

from __future__ import annotations

import collections
import io
import pickle
import shutil
import sys
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlstudio.core.model import efficientnet_lite
from tlstudio.core.model.lite0_weights import bundled_weights_path
from tlstudio.core.model.torch_pickle import MAGIC_NUMBER, PROTOCOL_VERSION, load_state_dict
from tlstudio.core.spec.errors import WeightsError


class Storage:
    def __init__(self, key: str, data: np.ndarray, numel: int | None = None) -> None:
        self.key, self.data = key, data
        self.numel = data.size if numel is None else numel


class Tensor:
    def __init__(self, storage, offset, shape, stride) -> None:
        self.args = (storage, offset, shape, stride)

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, (*self.args, False, collections.OrderedDict())


class Stateful:
    """An object pickled with BUILD (its __dict__ set after creation)."""

    def __reduce__(self):
        return collections.OrderedDict, (), {"evil": 1}


@pytest.fixture
def torch(monkeypatch):
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only used as a name")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch.FloatStorage = type("FloatStorage", (), {"__module__": "torch"})
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def write(path, state, storages, torch, data_bytes=None) -> None:
    class Pickler(pickle.Pickler):
        def persistent_id(self, value):
            if isinstance(value, Storage):
                return ("storage", torch.FloatStorage, value.key, "cpu", value.numel, None)
            return None

    with open(path, "wb") as file:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": PROTOCOL_VERSION, "little_endian": True}):
            pickle.dump(header, file, protocol=2)
        Pickler(file, protocol=2).dump(state)
        pickle.dump([s.key for s in storages], file, protocol=2)
        for storage in storages:
            file.write(storage.numel.to_bytes(8, "little"))
            file.write(storage.data.astype("<f4").tobytes() if data_bytes is None else data_bytes)


def refused(tmp_path, state, storages, torch, match, **kw):
    path = tmp_path / "w.pth"
    write(path, state, storages, torch, **kw)
    with pytest.raises(WeightsError, match=match):
        load_state_dict(path)


def test_a_plain_state_dict_reads(tmp_path, torch):
    data = Storage("0", np.arange(6, dtype=np.float32))
    path = tmp_path / "w.pth"
    write(path, collections.OrderedDict(w=Tensor(data, 0, (2, 3), (3, 1))), [data], torch)
    np.testing.assert_array_equal(load_state_dict(path)["w"], np.arange(6).reshape(2, 3))


@pytest.mark.parametrize("offset, shape, stride", [
    (0, (2, 3), (-3, 1)), (0, (2, 3), (0, 1)), (-1, (2,), (1,)), (0, (-2,), (1,)), (0, (2,), (1.5,)),
])
def test_bad_strides_offsets_and_shapes(tmp_path, torch, offset, shape, stride):
    data = Storage("0", np.arange(6, dtype=np.float32))
    refused(tmp_path, collections.OrderedDict(w=Tensor(data, offset, shape, stride)), [data], torch,
            "offset|stride|shape|non-integer")


def test_a_tensor_past_its_storage(tmp_path, torch):
    data = Storage("0", np.arange(6, dtype=np.float32))
    refused(tmp_path, collections.OrderedDict(w=Tensor(data, 4, (3,), (1,))), [data], torch, "past the end")


def test_a_storage_larger_than_the_file_is_refused_before_allocating(tmp_path, torch):
    data = Storage("0", np.arange(6, dtype=np.float32), numel=2**40)
    refused(tmp_path, collections.OrderedDict(w=Tensor(data, 0, (6,), (1,))), [data], torch,
            "more than the file holds", data_bytes=b"")


def test_a_truncated_storage(tmp_path, torch):
    data = Storage("0", np.arange(6, dtype=np.float32))
    refused(tmp_path, collections.OrderedDict(w=Tensor(data, 0, (6,), (1,))), [data], torch,
            "truncated", data_bytes=b"\0" * 8)


def test_a_tensor_shared_by_two_names(tmp_path, torch):
    data = Storage("0", np.arange(6, dtype=np.float32))
    tensor = Tensor(data, 0, (6,), (1,))
    refused(tmp_path, collections.OrderedDict(a=tensor, b=tensor), [data], torch, "refers twice|another name")


def test_a_shared_or_recursive_container(tmp_path, torch):
    inner = collections.OrderedDict()
    refused(tmp_path, collections.OrderedDict(a=inner, b=inner), [], torch, "refers twice")
    looped = collections.OrderedDict()
    looped["self"] = looped
    refused(tmp_path, looped, [], torch, "refers twice")


def test_build_on_anything_but_the_state_dicts_metadata(tmp_path, torch):
    refused(tmp_path, collections.OrderedDict(x=Stateful()), [], torch, "BUILD")


def test_not_a_tensor(tmp_path, torch):
    refused(tmp_path, collections.OrderedDict(x=[1, 2]), [], torch, "not a tensor")


def test_the_bundled_file_is_checked_against_its_sha256(tmp_path, monkeypatch):
    changed = tmp_path / "lite0.pth"
    shutil.copy(bundled_weights_path(), changed)
    with open(changed, "r+b") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    monkeypatch.setattr(efficientnet_lite, "bundled_weights_path", lambda: changed)
    monkeypatch.setattr(efficientnet_lite, "load_state_dict", lambda path: pytest.fail("parsed a changed file"))
    with pytest.raises(WeightsError, match="not the one TL Studio ships.*force-reinstall"):
        efficientnet_lite.imagenet_weights()


def test_the_bundled_file_matches_its_sha256():
    efficientnet_lite.check_sha256(bundled_weights_path(), efficientnet_lite.WEIGHTS_SHA256)


@pytest.fixture(scope="module")
def bundled_bytes() -> bytes:
    return bundled_weights_path().read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_damage_to_a_real_file_is_a_weights_error_or_a_state_dict(tmp_path, bundled_bytes, data):
    blob = bytearray(bundled_bytes[:60_000])  # header, pickle and the start of the storages
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(blob) - 1))
        blob[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    path = tmp_path / "damaged.pth"
    path.write_bytes(bytes(blob[:cut]))
    try:
        result = load_state_dict(path)
    except WeightsError:
        return
    assert all(isinstance(value, np.ndarray) for value in result.values())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_any_bytes_after_a_valid_header_are_a_weights_error(tmp_path, tail):
    header = io.BytesIO()
    for value in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}):
        pickle.dump(value, header, protocol=2)
    path = tmp_path / "random.pth"
    path.write_bytes(header.getvalue() + tail)
    try:
        load_state_dict(path)
    except WeightsError:
        pass
