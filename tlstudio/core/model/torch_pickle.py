"""Read a PyTorch state dict saved in the legacy (pre-zip) format, without torch.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file
names. This reader only lets a pickle name the few things a state dict is made
of (an ordered dict, tensors rebuilt from storages, storage types); any other
name is refused before anything runs.

The legacy layout is five pickles in a row (magic number, protocol version,
system information, the object itself, the list of storage keys) followed by
each storage's raw bytes: an 8-byte little-endian element count, then the data.

The file is hostile until proven otherwise. Besides the names it may use, the
reader refuses negative or zero strides, negative sizes and offsets, storages
larger than what is left of the file (checked before anything is allocated),
a memo reference to a container or tensor (the same structure shared or made
recursive), a tensor used under two names, and BUILD (setting an object's
state) on anything but the state dict's own ``_metadata``. Every failure is a
WeightsError.
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
        if storage.data is None:
            raise WeightsError("A tensor in the weights file has no stored data: the file is corrupt.")
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
    if not isinstance(storage, (_Storage, _StorageView)):
        raise WeightsError(f"A tensor in the weights file is built on {type(storage).__name__}, not a storage.")
    if not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride):
        raise WeightsError("A tensor in the weights file has a malformed shape or stride: the file is corrupt.")
    values = (storage_offset, *size, *stride)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise WeightsError("A tensor in the weights file has a non-integer shape, stride or offset.")
    if storage_offset < 0 or any(n < 0 for n in size) or any(s < 1 for s in stride):
        raise WeightsError(
            f"A tensor in the weights file has a negative offset or size, or a stride below 1 "
            f"(offset {storage_offset}, shape {size}, stride {stride}): the file is corrupt or hostile."
        )
    return _PendingTensor(storage, storage_offset, size, stride)


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


_SHAREABLE = (str, bytes, int, float, bool, type(None), _StorageType)
"""What a memo reference may fetch: immutable values and names (a storage type, an allowed function)."""


class _StateDictUnpickler(pickle._Unpickler):  # the Python unpickler, so opcodes can be checked one by one
    """An unpickler that resolves only the names a state dict uses and refuses shared or rebuilt structures."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, source: str, remaining_bytes: int) -> None:
        super().__init__(file)
        self.source = source
        self.remaining_bytes = remaining_bytes
        self.storages: dict[str, _Storage] = {}

    def _check_shared(self) -> None:
        value = self.stack[-1]
        if not (isinstance(value, _SHAREABLE) or value in _ALLOWED.values() or _immutable_tuple(value)):
            raise WeightsError(
                f"{self.source} refers twice to the same {type(value).__name__} (a shared or recursive "
                "structure), which a plain state dict never holds; it is refused as corrupt or hostile."
            )

    def load_get(self) -> None:
        pickle._Unpickler.load_get(self)
        self._check_shared()

    def load_binget(self) -> None:
        pickle._Unpickler.load_binget(self)
        self._check_shared()

    def load_long_binget(self) -> None:
        pickle._Unpickler.load_long_binget(self)
        self._check_shared()

    def load_build(self) -> None:
        state, target = self.stack[-1], self.stack[-2]
        if not (isinstance(target, collections.OrderedDict) and isinstance(state, dict) and set(state) <= {"_metadata"}):
            raise WeightsError(
                f"{self.source} sets the state of a {type(target).__name__} (pickle BUILD), which a plain state "
                "dict never does; it is refused as corrupt or hostile."
            )
        pickle._Unpickler.load_build(self)

    dispatch[pickle.GET[0]] = load_get
    dispatch[pickle.BINGET[0]] = load_binget
    dispatch[pickle.LONG_BINGET[0]] = load_long_binget
    dispatch[pickle.BUILD[0]] = load_build

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
        if len(saved_id) != 6:
            raise WeightsError(f"{self.source} holds a malformed storage reference; the file is corrupt.")
        storage_type, root_key, _location, numel, view_metadata = saved_id[1:]
        if not isinstance(storage_type, _StorageType):
            raise WeightsError(f"{self.source} names an unsupported storage type {storage_type!r}.")
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise WeightsError(f"{self.source} declares a storage of {numel!r} elements; the file is corrupt.")
        if numel * storage_type.dtype.itemsize > self.remaining_bytes:
            raise WeightsError(
                f"{self.source} declares a storage of {numel} elements, more than the file holds: "
                "it is truncated or corrupt."
            )
        root_key = str(root_key)
        storage = self.storages.get(root_key)
        if storage is None:
            storage = _Storage(storage_type.dtype, numel)
            self.storages[root_key] = storage
        elif storage.dtype != storage_type.dtype or storage.numel != numel:
            raise WeightsError(f"{self.source} describes storage {root_key!r} in two different ways; it is corrupt.")
        if view_metadata is not None:
            if not isinstance(view_metadata, tuple) or len(view_metadata) != 3:
                raise WeightsError(f"{self.source} holds a malformed storage view; the file is corrupt.")
            _view_key, offset, size = view_metadata
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (offset, size)) \
                    or offset < 0 or size < 0 or offset + size > numel:
                raise WeightsError(f"{self.source} holds a storage view outside its storage; the file is corrupt.")
            return _StorageView(storage, offset, size)
        return storage


def _immutable_tuple(value: Any) -> bool:
    """Whether ``value`` is a tuple holding only immutable values (a shape, a stride): safe to share."""
    return isinstance(value, tuple) and all(isinstance(v, _SHAREABLE) or _immutable_tuple(v) for v in value)


class _PlainUnpickler(_StateDictUnpickler):
    """For the small header and trailer pickles: plain values only, no names at all."""

    def find_class(self, module: str, name: str) -> Any:
        raise WeightsError(
            f"{self.source} refers to {module}.{name} where only plain values belong. "
            "Pickle files can run code, so TL Studio refuses to load it."
        )

    def persistent_load(self, saved_id: Any) -> Any:
        raise ValueError("a storage where only plain values belong")


def _plain_load(file: BinaryIO, source: str) -> Any:
    return _PlainUnpickler(file, source, 0).load()


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
    try:
        version = _plain_load(file, source)
        info = _plain_load(file, source)
    except WeightsError:
        raise
    except Exception:
        raise WeightsError(f"{source} has a damaged header: it is not a PyTorch weights file.") from None
    if version != PROTOCOL_VERSION:
        raise WeightsError(f"{source} uses PyTorch protocol version {version!r}; expected {PROTOCOL_VERSION}.")
    if isinstance(info, dict) and info.get("little_endian") is False:
        raise WeightsError(f"{source} was saved on a big-endian machine; only little-endian files are supported.")


def _read_storages(file: BinaryIO, storages: dict[str, _Storage], keys: list[Any], source: str) -> None:
    if len(set(map(str, keys))) != len(keys):
        raise WeightsError(f"{source} lists a storage twice: the file is corrupt.")
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
        remaining = os.fstat(file.fileno()).st_size - file.tell()
        unpickler = _StateDictUnpickler(file, source, remaining)
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
        missing = [key for key, storage in unpickler.storages.items() if storage.data is None]
        if missing:
            raise WeightsError(f"{source} never stores the data of storage {missing[0]!r}: the file is corrupt.")
    result: dict[str, np.ndarray] = {}
    seen: set[int] = set()
    for name, value in state.items():
        if not isinstance(value, _PendingTensor):
            raise WeightsError(f"{source}: entry {name!r} is not a tensor.")
        if id(value) in seen:
            raise WeightsError(f"{source}: entry {name!r} is a tensor already used under another name.")
        seen.add(id(value))
        result[str(name)] = value.materialise()
    return result
