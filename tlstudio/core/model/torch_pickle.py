"""Read a PyTorch state dict saved in the legacy (pre-zip) format, without torch.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file
names. This reader only lets a pickle name the few things a state dict is made
of (an ordered dict, tensors rebuilt from storages, storage types); any other
name is refused before anything runs.

The legacy layout is five pickles in a row (magic number, protocol version,
system information, the object itself, the list of storage keys) followed by
each storage's raw bytes: an 8-byte little-endian element count, then the data.
"""

from __future__ import annotations

import collections
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tlstudio.core.spec.errors import WeightsError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.FloatStorage`` and its kin: only the dtype matters."""

    name: str
    dtype: np.dtype


@dataclass
class _Storage:
    """A storage whose bytes come after the main pickle; filled in later."""

    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _StorageView:
    """A legacy view into part of a root storage (``view_metadata``)."""

    root: _Storage
    offset: int
    size: int


@dataclass(frozen=True)
class _PendingTensor:
    """A tensor whose storage has not been read yet."""

    storage: _Storage | _StorageView
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> np.ndarray:
        storage, offset = self.storage, self.offset
        if isinstance(storage, _StorageView):
            storage, offset = storage.root, storage.offset + offset
        assert storage.data is not None
        flat = storage.data
        if not self.shape:
            return np.array(flat[offset], dtype=flat.dtype)
        itemsize = flat.dtype.itemsize
        if any(n == 0 for n in self.shape):
            return np.zeros(self.shape, dtype=flat.dtype)
        needed = offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) + 1
        if needed > flat.size:
            raise WeightsError("A tensor in the weights file reaches past the end of its storage: the file is corrupt.")
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=self.shape, strides=tuple(s * itemsize for s in self.stride)
        )
        return np.array(view, copy=True)


def _rebuild_tensor(storage, storage_offset, size, stride, *_rest) -> _PendingTensor:
    """Stands in for ``torch._utils._rebuild_tensor_v2`` (and the older ``_rebuild_tensor``)."""
    return _PendingTensor(storage, int(storage_offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, _requires_grad=False, _backward_hooks=None, *_rest):
    """Stands in for ``torch._utils._rebuild_parameter``: a parameter is its tensor."""
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names a state dict uses."""

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file)
        self.source = source
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise WeightsError(
                f"{self.source} refers to {module}.{name}, which a plain PyTorch state dict never needs. "
                "Pickle files can run code, so TL Studio refuses to load it. Expected only tensors in an "
                "OrderedDict; use the weights file shipped with TL Studio or one saved with torch.save(model.state_dict())."
            ) from None

    def persistent_load(self, saved_id: Any) -> Any:
        if not isinstance(saved_id, tuple) or not saved_id or saved_id[0] != "storage":
            raise WeightsError(f"{self.source} holds an unexpected persistent object {saved_id!r:.80}; it is not a state dict.")
        storage_type, root_key, _location, numel, view_metadata = saved_id[1:]
        if not isinstance(storage_type, _StorageType):
            raise WeightsError(f"{self.source} names an unsupported storage type {storage_type!r}.")
        root_key = str(root_key)
        storage = self.storages.get(root_key)
        if storage is None:
            storage = _Storage(storage_type.dtype, int(numel))
            self.storages[root_key] = storage
        if view_metadata is not None:
            _view_key, offset, size = view_metadata
            return _StorageView(storage, int(offset), int(size))
        return storage


class _PlainUnpickler(_StateDictUnpickler):
    """For the small header and trailer pickles: plain values only, no names at all."""

    def find_class(self, module: str, name: str) -> Any:
        raise WeightsError(
            f"{self.source} refers to {module}.{name} where only plain values belong. "
            "Pickle files can run code, so TL Studio refuses to load it."
        )


def _plain_load(file: BinaryIO, source: str) -> Any:
    return _PlainUnpickler(file, source).load()


def _read_header(file: BinaryIO, source: str) -> None:
    try:
        magic = _plain_load(file, source)
    except WeightsError:
        raise
    except Exception:
        magic = None
    if magic != MAGIC_NUMBER:
        raise WeightsError(
            f"{source} is not a legacy PyTorch weights file (no PyTorch magic number at its start). "
            "Expected a .pth saved with torch.save(..., _use_new_zipfile_serialization=False)."
        )
    version = _plain_load(file, source)
    if version != PROTOCOL_VERSION:
        raise WeightsError(f"{source} uses PyTorch protocol version {version!r}; expected {PROTOCOL_VERSION}.")
    info = _plain_load(file, source)
    if isinstance(info, dict) and info.get("little_endian") is False:
        raise WeightsError(f"{source} was saved on a big-endian machine; only little-endian files are supported.")


def _read_storages(file: BinaryIO, storages: dict[str, _Storage], keys: list[Any], source: str) -> None:
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise WeightsError(f"{source} lists storage {key!r} that no tensor uses: the file is corrupt.")
        header = file.read(8)
        if len(header) != 8:
            raise WeightsError(f"{source} ends before storage {key!r}: the file is truncated.")
        count = int.from_bytes(header, "little")
        if count != storage.numel:
            raise WeightsError(f"{source}: storage {key!r} holds {count} elements, the pickle said {storage.numel}.")
        nbytes = count * storage.dtype.itemsize
        raw = file.read(nbytes)
        if len(raw) != nbytes:
            raise WeightsError(f"{source} ends inside storage {key!r}: the file is truncated.")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a legacy-format PyTorch state dict as ``name -> numpy array``.

    Raises WeightsError when the file is missing, not in the legacy format,
    truncated, or names anything a state dict does not need.
    """
    source = f"The weights file {str(path)!r}"
    try:
        file = Path(path).open("rb")
    except OSError as error:
        raise WeightsError(f"Cannot open {source[4:]}: {error.strerror or error}.") from None
    with file:
        _read_header(file, source)
        unpickler = _StateDictUnpickler(file, source)
        try:
            state = unpickler.load()
            keys = _plain_load(file, source)
        except WeightsError:
            raise
        except Exception as error:
            raise WeightsError(f"{source} cannot be read as a state dict: {error}.") from None
        if not isinstance(state, dict) or not isinstance(keys, list):
            raise WeightsError(f"{source} does not hold a state dict (a mapping of names to tensors).")
        _read_storages(file, unpickler.storages, keys, source)
    result: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not isinstance(value, _PendingTensor):
            raise WeightsError(f"{source}: entry {name!r} is not a tensor.")
        result[str(name)] = value.materialise()
    return result
