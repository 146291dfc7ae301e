"""Write a file whole or not at all.

The bytes go to a temporary file beside the target, are flushed and synced to
the disk, and only then renamed over the target; on any error (a full disk, a
read-only folder) the temporary file is removed and the old target is left as
it was. Plain file writes only: a memory-mapped write to a full disk is a
SIGBUS that kills the process.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomic(target: str | os.PathLike[str], data: bytes) -> Path:
    """Replace ``target`` with ``data`` atomically; raise OSError (nothing left behind) on failure."""
    return write_atomic_with(target, lambda handle: handle.write(data))


def write_atomic_with(target: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Replace ``target`` with what ``write(handle)`` writes, atomically, as :func:`write_atomic`."""
    path = Path(target)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    sync_folder(path.parent)
    return path


def sync_folder(folder: Path) -> None:
    """Make the rename itself durable where the platform allows syncing a folder."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
