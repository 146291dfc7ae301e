"""A persistent cache of what a frozen base computes for each image.

Training a head on a frozen base needs the cut tensor's value for every image
(after the head's weightless pooling or flattening), and that value only
depends on the base model, its weights, the cut, the input size, the
preprocessing, the pooling and the image itself. This cache keeps those values
on disk so another head, other hyperparameters or a second run on the same
images start training at once instead of running the base again.

Layout under ``paths.cache_dir()/features``:

* ``index.sqlite`` — the index: feature sets, shard files and one row per
  image content in each set;
* ``<set>/<shard>.npy`` — float32 arrays ``(rows, *feature_shape)`` written
  with plain file writes (temporary file, fsync, rename: a memory-mapped write
  to a full disk would be a SIGBUS) and read memory-mapped.

A **feature set** is one :class:`FeatureSetKey`: everything but the image that
changes the features. Within a set, rows are keyed by a hash of the image
file's bytes, read every time (never trusted from a path, size and mtime: a
file rewritten with the same size and mtime must not get stale features), so
renaming or moving a file keeps its features and a changed file is extracted
again; a request re-extracts only the images that are
missing. Shards are written to a temporary name and renamed into place before
the index points at them, and index changes are SQLite transactions, so
concurrent runs (two app windows, a CLI run beside the app) never read a
half-written file; a shard that has gone missing is treated as not cached.

The cache is bounded (``TLSTUDIO_FEATURE_CACHE_MB``, default
:data:`DEFAULT_LIMIT_MB`; 0 turns it off): after a write, whole feature sets
are evicted, least recently used first. Nothing here is needed for
correctness: any problem reading or writing the cache falls back to plain
extraction, with a note saying why: a full disk or a read-only cache folder
means no cache for this run, never a failed run. The index is not trusted
either: only names the cache itself makes (hex digests, ``<hex>.npy`` shards)
are ever opened or deleted, so a tampered ``index.sqlite`` cannot make
eviction delete anything outside the cache folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from tlstudio.core import tf_compat
from tlstudio.core.spec import paths, settings
from tlstudio.core.spec.anatomy import is_head_layer
from tlstudio.core.spec.atomic import write_atomic_with

FORMAT_VERSION = 1
"""Part of every key: a change in how features are computed or stored invalidates old sets."""
LIMIT_ENV = "TLSTUDIO_FEATURE_CACHE_MB"
DEFAULT_LIMIT_MB = 2048
INDEX_FILE = "index.sqlite"
_SQL_CHUNK = 500
_BUSY_TIMEOUT_S = 30.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sets (
    key TEXT PRIMARY KEY, description TEXT NOT NULL, shape TEXT NOT NULL, last_used REAL NOT NULL);
CREATE TABLE IF NOT EXISTS shards (
    name TEXT PRIMARY KEY, set_key TEXT NOT NULL, rows INTEGER NOT NULL, bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    set_key TEXT NOT NULL, content TEXT NOT NULL, shard TEXT NOT NULL, row INTEGER NOT NULL,
    PRIMARY KEY (set_key, content));
"""


@dataclass(frozen=True)
class FeatureSetKey:
    """Everything except the image that decides a feature vector.

    ``weights`` hashes the values of every variable up to the cut (so random
    initialisations with different seeds, a user's retrained file or
    fine-tuned weights are all different sets); ``structure`` hashes the
    layers' types, settings and dtype policies and the output shape (so mixed
    precision, for one, gets its own set).
    """

    base: str
    cut_tensor: str
    input_size: int
    preprocessing: str
    pooling: str
    weights: str
    structure: str

    @property
    def digest(self) -> str:
        """A short stable name for the set: its folder and index key."""
        text = json.dumps({"format": FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def describe(self) -> str:
        return (
            f"{self.base}, cut {self.cut_tensor}, {self.input_size}x{self.input_size}, "
            f"preprocessing {self.preprocessing}, pooling {self.pooling}, weights {self.weights[:12]}"
        )


@dataclass(frozen=True)
class CacheUse:
    """How one request was served: images read from the cache, images extracted, and any note."""

    from_cache: int
    extracted: int
    stored: bool
    note: str = ""


@dataclass(frozen=True)
class CachedSet:
    """One feature set in the cache, for listings."""

    key: str
    description: str
    images: int
    bytes: int
    last_used: float


@dataclass(frozen=True)
class CacheStatus:
    """What the cache holds: feature sets, image rows and bytes on disk, against its limit."""

    path: Path
    sets: tuple[CachedSet, ...] = field(default_factory=tuple)
    limit_bytes: int = DEFAULT_LIMIT_MB * 2**20

    @property
    def entries(self) -> int:
        return sum(s.images for s in self.sets)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.sets)


def default_root() -> Path:
    """``paths.cache_dir()/features``."""
    return paths.cache_dir() / "features"


def limit_from_env() -> int:
    """The size limit in bytes: ``TLSTUDIO_FEATURE_CACHE_MB`` megabytes, else :data:`DEFAULT_LIMIT_MB`."""
    return settings.megabytes_from_env(LIMIT_ENV, DEFAULT_LIMIT_MB * 2**20, "turns the feature cache off")


def feature_set_key(frozen: Any, base: str, cut_tensor: str) -> FeatureSetKey:
    """The key of the features ``frozen`` computes: a Keras model from images to the cut's pooled value.

    ``base`` names the base model for listings (``vgg16``, a file path);
    ``cut_tensor`` tells apart cuts whose layers and shapes look alike.
    Preprocessing, pooling and input size are read from ``frozen`` itself.
    """
    layers = tf_compat.all_layers(frozen, include_self=False)
    preprocessing = next((str(layer.mode) for layer in layers if type(layer).__name__ == "Preprocess"), "none")
    pooling = "+".join(type(layer).__name__ for layer in layers if is_head_layer(layer)) or "none"
    return FeatureSetKey(
        base=str(base),
        cut_tensor=str(cut_tensor),
        input_size=int(frozen.input_shape[1] or 0),
        preprocessing=preprocessing,
        pooling=pooling,
        weights=weights_digest(frozen),
        structure=_structure_digest(frozen, layers),
    )


def weights_digest(model: Any) -> str:
    """A hash of the values, shapes and dtypes of every variable of ``model``, in order."""
    digest = hashlib.blake2b(digest_size=16)
    for variable in model.weights:
        value = np.ascontiguousarray(variable.numpy())
        digest.update(f"{value.dtype.str}{value.shape};".encode())
        digest.update(value.data)
    return digest.hexdigest()


def _structure_digest(frozen: Any, layers: list) -> str:
    """A hash of each layer's type, settings (names aside) and dtype policy, and the output shape."""
    parts: list[Any] = [list(frozen.output_shape)]
    for layer in layers:
        policy = getattr(getattr(layer, "dtype_policy", None), "name", "")
        config: Any = None
        if not hasattr(layer, "layers"):
            try:
                config = {k: v for k, v in layer.get_config().items() if k not in ("name", "trainable", "dtype")}
            except (NotImplementedError, TypeError, AttributeError):
                config = None
        parts.append([type(layer).__name__, policy, config])
    text = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def content_hash(path: str | os.PathLike[str]) -> str:
    """A hash of a file's bytes."""
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class FeatureCache:
    """The feature cache in ``root`` (default :func:`default_root`), bounded by ``limit_bytes``.

    Each method opens its own SQLite connection, so one object may be used
    from any thread and several processes may share the folder.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, limit_bytes: int | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.limit_bytes = limit_from_env() if limit_bytes is None else int(limit_bytes)

    # ------------------------------------------------------------ public

    def features(
        self,
        key: FeatureSetKey,
        items: Sequence[Any],
        extract: Callable[[list[Any]], np.ndarray],
    ) -> tuple[np.ndarray, CacheUse]:
        """The features of ``items`` (anything with a ``path``), in order, and how they were obtained.

        Rows already cached for ``key`` are read; the others go to ``extract``
        (a list of items in, an array with one row per item out; each distinct
        file content once) and are stored. Errors from ``extract`` (a stop
        request, an unreadable image) pass through; cache problems do not.
        """
        if self.limit_bytes <= 0:
            values = extract(list(items))
            return np.asarray(values, dtype=np.float32), CacheUse(0, len(items), False, "the feature cache is off")
        notes: list[str] = []
        hashes: list[str | None] = [None] * len(items)
        out: np.ndarray | None = None
        have = np.zeros(len(items), dtype=bool)
        try:
            hashes = self._content_hashes([str(item.path) for item in items])
            with self._connect() as db:
                out = self._read(db, key, hashes, have)
        except (OSError, sqlite3.Error) as error:
            notes.append(f"could not be read ({_short(error)})")
        from_cache = int(have.sum())
        missing = [i for i in range(len(items)) if not have[i]]
        firsts: dict[str, int] = {}
        to_extract: list[int] = []
        for index in missing:
            content = hashes[index]
            if content is None or content not in firsts:
                if content is not None:
                    firsts[content] = len(to_extract)
                to_extract.append(index)
        stored = False
        if to_extract:
            values = np.asarray(extract([items[i] for i in to_extract]), dtype=np.float32)
            if len(to_extract) == len(items):  # nothing cached, no repeated content: the rows are in order
                out = values
            else:
                if out is None:
                    out = np.empty((len(items), *values.shape[1:]), dtype=np.float32)
                out[to_extract] = values
                for index in missing:
                    content = hashes[index]
                    if content is not None:
                        out[index] = values[firsts[content]]
            hashed = [position for position, index in enumerate(to_extract) if hashes[index] is not None]
            contents = [hashes[to_extract[position]] for position in hashed]
            stored, note = self._store(key, contents, values if len(hashed) == len(values) else values[hashed])
            if note:
                notes.append(note)
        elif out is None:
            out = np.zeros((0,), dtype=np.float32)
        if from_cache:
            self._touch(key)
        return out, CacheUse(from_cache, len(to_extract), stored, "; ".join(notes))

    def status(self) -> CacheStatus:
        """The feature sets held, their images and bytes, most recently used first."""
        if not (self.root / INDEX_FILE).is_file():
            return CacheStatus(self.root, (), self.limit_bytes)
        with self._connect() as db:
            rows = db.execute(
                "SELECT s.key, s.description, s.last_used, "
                "(SELECT COUNT(*) FROM rows r WHERE r.set_key = s.key), "
                "(SELECT COALESCE(SUM(bytes), 0) FROM shards h WHERE h.set_key = s.key) "
                "FROM sets s ORDER BY s.last_used DESC"
            ).fetchall()
        sets = tuple(CachedSet(key, description, int(n), int(size), float(used))
                     for key, description, used, n, size in rows)
        return CacheStatus(self.root, sets, self.limit_bytes)

    def clear(self) -> int:
        """Delete every cached feature set; return the bytes freed.

        A damaged index is deleted as well, so ``clear`` is also the cure for
        a cache that cannot be read.
        """
        freed = 0
        try:
            freed = self.status().bytes
            with self._connect() as db, _transaction(db):
                for table in ("rows", "shards", "sets"):
                    db.execute(f"DELETE FROM {table}")
        except sqlite3.DatabaseError:
            (self.root / INDEX_FILE).unlink(missing_ok=True)
        if self.root.is_dir():
            for child in self.root.iterdir():
                if _is_set_name(child.name) and child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
        return freed

    # ------------------------------------------------------------ index

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.root.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.root / INDEX_FILE, timeout=_BUSY_TIMEOUT_S, isolation_level=None)) as db:
            db.executescript(_SCHEMA)
            yield db

    def _content_hashes(self, file_paths: list[str]) -> list[str | None]:
        """Each file's content hash, read now; None when it cannot be read (vanished, unreadable)."""
        hashes: list[str | None] = []
        for path in file_paths:
            try:
                hashes.append(content_hash(path))
            except OSError:
                hashes.append(None)
        return hashes

    def _read(
        self, db: sqlite3.Connection, key: FeatureSetKey, hashes: list[str | None], have: np.ndarray
    ) -> np.ndarray | None:
        """Fill the rows cached for ``key``; mark them in ``have``; None when the set is unknown."""
        found = db.execute("SELECT shape FROM sets WHERE key = ?", (key.digest,)).fetchone()
        if found is None:
            return None
        shape = tuple(json.loads(found[0]))
        out = np.empty((len(hashes), *shape), dtype=np.float32)
        wanted = sorted({h for h in hashes if h is not None})
        located: dict[str, tuple[str, int]] = {}
        for chunk in _chunks(wanted):
            marks = ",".join("?" * len(chunk))
            for content, shard, row in db.execute(
                f"SELECT content, shard, row FROM rows WHERE set_key = ? AND content IN ({marks})",
                [key.digest, *chunk],
            ):
                located[content] = (shard, row)
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for index, content in enumerate(hashes):
            if content in located:
                shard, row = located[content]
                by_shard.setdefault(shard, []).append((index, row))
        for shard, pairs in by_shard.items():
            try:
                if not _is_shard_name(shard):
                    raise ValueError(f"shard name {shard!r} was not made by the cache")
                stored = np.load(self.root / key.digest / shard, mmap_mode="r", allow_pickle=False)
                if stored.shape[1:] != shape or max(row for _, row in pairs) >= len(stored):
                    raise ValueError(f"shard {shard} has shape {stored.shape}")
                indices = np.fromiter((i for i, _ in pairs), dtype=np.int64)
                rows = np.fromiter((r for _, r in pairs), dtype=np.int64)
                out[indices] = stored[rows]
                have[indices] = True
                del stored
            except (OSError, ValueError):
                with _transaction(db):
                    db.execute("DELETE FROM rows WHERE shard = ?", (shard,))
                    db.execute("DELETE FROM shards WHERE name = ?", (shard,))
        return out

    def _store(self, key: FeatureSetKey, contents: list[str], values: np.ndarray) -> tuple[bool, str]:
        """Write ``values`` (row ``i`` the features of content hash ``contents[i]``) as one shard, then
        evict to the limit."""
        if not contents:
            return False, ""
        folder = self.root / key.digest
        name = f"{uuid.uuid4().hex}.npy"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic_with(folder / name, lambda handle: np.lib.format.write_array(handle, values))
            size = (folder / name).stat().st_size
            with self._connect() as db:
                with _transaction(db):
                    db.execute(
                        "INSERT INTO sets VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET last_used = excluded.last_used",
                        (key.digest, key.describe(), json.dumps(list(values.shape[1:])), time.time()),
                    )
                    db.execute("INSERT INTO shards VALUES (?, ?, ?, ?)", (name, key.digest, len(contents), size))
                    db.executemany(
                        "INSERT OR IGNORE INTO rows VALUES (?, ?, ?, ?)",
                        [(key.digest, content, name, row) for row, content in enumerate(contents)],
                    )
                kept = self._evict(db, protect=key.digest)
        except (OSError, sqlite3.Error) as error:
            (folder / name).unlink(missing_ok=True)
            return False, _write_note(error)
        if not kept:
            return False, (
                f"these features ({values.nbytes / 2**20:.0f} MB and more) do not fit the cache limit of "
                f"{self.limit_bytes / 2**20:.0f} MB and were not kept; raise {LIMIT_ENV} to keep them"
            )
        return True, ""

    def _touch(self, key: FeatureSetKey) -> None:
        try:
            with self._connect() as db, _transaction(db):
                db.execute("UPDATE sets SET last_used = ? WHERE key = ?", (time.time(), key.digest))
        except sqlite3.Error:
            pass

    def _evict(self, db: sqlite3.Connection, protect: str) -> bool:
        """Evict least recently used sets until the cache fits; False when ``protect`` had to go too."""
        sizes = dict(db.execute("SELECT set_key, SUM(bytes) FROM shards GROUP BY set_key").fetchall())
        total = sum(sizes.values())
        if total <= self.limit_bytes:
            return True
        order = [key for (key,) in db.execute("SELECT key FROM sets ORDER BY last_used ASC")]
        order = [key for key in order if key != protect] + [protect]
        for key in order:
            if total <= self.limit_bytes:
                break
            with _transaction(db):
                for table, column in (("rows", "set_key"), ("shards", "set_key"), ("sets", "key")):
                    db.execute(f"DELETE FROM {table} WHERE {column} = ?", (key,))
            if _is_set_name(key):
                shutil.rmtree(self.root / key, ignore_errors=True)
            total -= sizes.get(key, 0)
            if key == protect:
                return False
        return True


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taken at once so concurrent writers queue instead of deadlocking."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _is_set_name(name: object) -> bool:
    """Whether ``name`` is a feature-set folder name the cache makes (32 hex digits), nothing else."""
    return isinstance(name, str) and len(name) == 32 and all(c in "0123456789abcdef" for c in name)


def _is_shard_name(name: object) -> bool:
    """Whether ``name`` is a shard file name the cache makes (32 hex digits, ``.npy``)."""
    return isinstance(name, str) and name.endswith(".npy") and _is_set_name(name[:-4])


def _write_note(error: BaseException) -> str:
    """Why features could not be kept, for the user: the cache is skipped, the work goes on."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "the disk is full"
    elif isinstance(error, OSError) and error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason = "the cache folder is read-only"
    else:
        reason = _short(error)
    return (f"could not be written ({reason}); going on without the cache. Free some space or set "
            f"{LIMIT_ENV}=0 to turn the cache off")


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _SQL_CHUNK):
        yield values[start : start + _SQL_CHUNK]


def _short(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def status() -> CacheStatus:
    """The default cache's status (see :meth:`FeatureCache.status`)."""
    return FeatureCache().status()


def clear() -> int:
    """Empty the default cache; return the bytes freed."""
    return FeatureCache().clear()
