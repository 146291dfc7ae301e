"""Walk image folders safely: classes, layouts and every file left out, never a crash.

The scanner lists each folder once (folders are tracked by their real path),
classifies every entry without following it blindly and records anything it
cannot use with a short reason: hidden and system files, symlink loops
(``ELOOP``), dangling symlinks, links into folders it cannot read, FIFOs and
other special files (never opened, so never blocking), files that vanish
while it reads them, and folders nested deeper than :data:`MAX_DEPTH`. Names
that are not valid UTF-8 are kept as Python keeps them (surrogate escapes), so
the files still open.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from tlstudio.core.data import images
from tlstudio.core.spec.errors import Cancelled, DataError, ImageError
from tlstudio.core.spec.events import OnEvent, Progress, ShouldStop

MAX_DEPTH = 64
"""Folders nested deeper than this below a class folder are skipped (and reported)."""
PROGRESS_EVERY = 200
PROBE_MEMO_SIZE = 200_000
"""Header checks :func:`probe_remembered` keeps (about 300 bytes each)."""
UNSETTLED_S = 2.0
"""A file changed less than this long before its header was checked is checked again next time: a
file system's timestamps may be coarse enough for a rewrite within the same tick to keep them."""

_SPLIT_FOLDER_NAMES = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}
_SYSTEM_FOLDERS = {
    "__macosx": "macOS metadata folder (__MACOSX)",
    "$recycle.bin": "system folder",
    "system volume information": "system folder",
}
_SYSTEM_FILES = {"thumbs.db", "desktop.ini"}


@dataclass(frozen=True)
class Source:
    """A folder whose images all belong to one class, in one split (None: to be split).

    ``ancestors`` are the real paths of the folders listed above it (the root,
    the split folder): a symlink back to one of them is a loop.
    """

    class_name: str
    folder: str
    split: str | None = None
    ancestors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Found:
    """A usable image found while scanning."""

    class_name: str
    path: str
    size_bytes: int
    split: str | None
    key: str  # the class name and the path inside the class folder: what the split hashes


class Scanner:
    """Walks folders safely, collecting skipped files, visited folders and progress."""

    def __init__(self, on_event: OnEvent, should_stop: ShouldStop) -> None:
        self.on_event = on_event
        self.should_stop = should_stop
        self.skipped: dict[str, str] = {}
        self.visited: set[str] = set()
        self.class_folders: set[str] = set()
        self.files_seen = 0
        self.started = time.monotonic()

    def skip(self, path: str, reason: str) -> None:
        """Record ``path`` as left out; a folder listed twice is reported once."""
        self.skipped.setdefault(path, reason)

    def check_stop(self) -> None:
        if self.should_stop():
            raise Cancelled("Scanning the image folders was cancelled.")

    def count_file(self) -> None:
        self.files_seen += 1
        if self.files_seen % PROGRESS_EVERY == 0:
            self.on_event(Progress("scan", self.files_seen, None, f"{self.files_seen} files read"))

    def finish(self) -> None:
        self.on_event(Progress("scan", self.files_seen, self.files_seen, f"{self.files_seen} files read"))

    def list_folder(self, folder: str) -> tuple[list[os.DirEntry], list[os.DirEntry]] | None:
        """The sub-folders and files of ``folder`` worth looking at; skips the rest.

        Returns None (with the folder recorded as skipped) when it cannot be read.
        """
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.skip(folder, _folder_reason(exc))
            return None
        folders, files = [], []
        for entry in entries:
            kind = self._classify(entry)
            if kind == "folder":
                folders.append(entry)
            elif kind == "file":
                files.append(entry)
        return folders, files

    def _classify(self, entry: os.DirEntry) -> str:
        """'folder', 'file' or 'skipped' (recorded with its reason); never raises for what it finds."""
        lower = entry.name.lower()
        try:
            mode = entry.stat().st_mode
        except OSError as exc:
            self.skip(entry.path, _entry_reason(entry, exc))
            return "skipped"
        is_dir = stat.S_ISDIR(mode)
        if entry.name.startswith("."):
            self.skip(entry.path, "hidden folder" if is_dir else "hidden file")
        elif is_dir and lower in _SYSTEM_FOLDERS:
            self.skip(entry.path, _SYSTEM_FOLDERS[lower])
        elif is_dir:
            return "folder"
        elif stat.S_ISFIFO(mode):
            self.skip(entry.path, "not a regular file (a named pipe)")
        elif not stat.S_ISREG(mode):
            self.skip(entry.path, "not a regular file")
        elif lower in _SYSTEM_FILES:
            self.skip(entry.path, "system file")
        else:
            return "file"
        return "skipped"

    def scan_class_folder(self, source: Source) -> list[Found]:
        """Every usable image under ``source.folder``, sub-folders included."""
        found: list[Found] = []
        stack: list[tuple[str, tuple[str, ...], int]] = [(source.folder, source.ancestors, 0)]
        while stack:
            folder, ancestors, depth = stack.pop()
            self.check_stop()
            if depth > MAX_DEPTH:
                self.skip(folder, f"nested too deep (more than {MAX_DEPTH} folders below the class folder)")
                continue
            real = os.path.realpath(folder)
            if real in ancestors:
                self.skip(folder, f"symlink loop (links back to {real})")
                continue
            if real in self.visited:
                self.skip(folder, "folder already scanned through another path")
                continue
            if folder != source.folder and real in self.class_folders:
                self.skip(folder, "links to another class folder")
                continue
            self.visited.add(real)
            listing = self.list_folder(folder)
            if listing is None:
                continue
            subfolders, files = listing
            for entry in files:
                self.check_stop()
                size_bytes = self._probe(entry)
                if size_bytes is not None:
                    relative = os.path.relpath(entry.path, source.folder).replace(os.sep, "/")
                    key = f"{source.class_name}/{relative}"
                    found.append(Found(source.class_name, entry.path, size_bytes, source.split, key))
            stack.extend((entry.path, ancestors + (real,), depth + 1) for entry in reversed(subfolders))
        return found

    def _probe(self, entry: os.DirEntry) -> int | None:
        """The file's size in bytes when it is a usable image; None (recorded) otherwise."""
        self.count_file()
        try:
            file_stat = entry.stat()
        except OSError as exc:
            self.skip(entry.path, f"cannot read: {exc.strerror or exc}")
            return None
        if not stat.S_ISREG(file_stat.st_mode):
            self.skip(entry.path, "not a regular file")
            return None
        reason = probe_remembered(entry.path, file_stat)
        if reason is not None:
            self.skip(entry.path, reason)
            return None
        return file_stat.st_size

    def holds_an_image(self, files: Iterable[os.DirEntry]) -> bool:
        """Whether any of ``files`` is a usable image (header check, stops at the first)."""
        for entry in files:
            try:
                images.probe_image(entry.path)
            except ImageError:
                continue
            return True
        return False


_probed: OrderedDict[tuple, None] = OrderedDict()
_probed_lock = threading.Lock()


def probe_remembered(path: str, file_stat: os.stat_result) -> str | None:
    """Why ``path`` is not a usable image (None: it is), from its header; a usable image is remembered.

    Every training run scans its folders again. A file found usable whose
    path, device, inode, size, modification and change times (nanoseconds)
    are those it had when its header was checked is not read again, unless it
    had changed less than :data:`UNSETTLED_S` before that check (git's answer
    to coarse timestamps). The change time cannot be set back, so a file
    rewritten and given its old modification time is read again. Files found
    unusable are always read again (the reason may pass: a file in use, too
    many open files), and nothing is remembered on Windows, where a scan sees
    no inode and the change time is the creation time.
    """
    key = (path, file_stat.st_dev, file_stat.st_ino, file_stat.st_size, file_stat.st_mtime_ns,
           file_stat.st_ctime_ns)
    with _probed_lock:
        if key in _probed:
            _probed.move_to_end(key)
            return None
    checked_at = time.time_ns()
    try:
        images.probe_image(path)
    except ImageError as exc:
        return exc.reason
    settled = checked_at - max(file_stat.st_mtime_ns, file_stat.st_ctime_ns) > UNSETTLED_S * 1e9
    if settled and sys.platform != "win32":
        with _probed_lock:
            _probed[key] = None
            if len(_probed) > PROBE_MEMO_SIZE:
                _probed.popitem(last=False)
    return None


def check_folders(folders: Sequence[str | Path]) -> list[str]:
    """Absolute paths of ``folders``; DataError when one is missing or not a folder."""
    if isinstance(folders, (str, Path)):
        folders = [folders]
    if not folders:
        raise DataError(
            "No image folders were given. Expected a folder with one sub-folder per class, "
            "or several folders that are each one class. Received: folders=[]"
        )
    roots = []
    for folder in folders:
        path = os.path.abspath(os.path.expanduser(str(folder)))
        if os.path.islink(path) and not os.path.exists(path):
            raise DataError(
                f"The image folder {str(folder)!r} is a symlink that leads nowhere (broken, or a loop). "
                "Give the real folder."
            )
        if not os.path.exists(path):
            raise DataError(f"The image folder does not exist: {str(folder)!r}. Check the path. Received: {path!r}")
        if not os.path.isdir(path):
            raise DataError(
                f"Expected a folder of images, but this is a file: {str(folder)!r}. "
                "Give the folder that holds the class sub-folders."
            )
        roots.append(path)
    return roots


def find_sources(roots: list[str], scanner: Scanner) -> tuple[str, list[Source]]:
    """Decide the layout and list the class folders; loose files are recorded as skipped."""
    if len(roots) > 1:
        return "folder-per-class", [Source(_folder_name(root), root) for root in roots]
    root = roots[0]
    listing = scanner.list_folder(root)
    if listing is None:
        raise DataError(f"Cannot read the image folder {root!r}: permission denied. Check its permissions.")
    subfolders, files = listing
    splits = _split_folders(subfolders)
    if "train" in splits and ("val" in splits or "test" in splits):
        return "split-folders", _split_sources(root, subfolders, files, splits, scanner)
    if scanner.holds_an_image(files):
        return "folder-per-class", [Source(_folder_name(root), root)]
    for entry in files:
        scanner.skip(entry.path, "not inside a class folder")
    ancestors = (os.path.realpath(root),)
    return "class-folders", [Source(entry.name, entry.path, None, ancestors) for entry in subfolders]


def _split_folders(subfolders: list[os.DirEntry]) -> dict[str, os.DirEntry]:
    """The train/val/test folders among ``subfolders``, by split name (case ignored)."""
    splits = {}
    for entry in subfolders:
        for split, names in _SPLIT_FOLDER_NAMES.items():
            if entry.name.lower() in names and split not in splits:
                splits[split] = entry
    return splits


def _split_sources(
    root: str,
    subfolders: list[os.DirEntry],
    files: list[os.DirEntry],
    splits: dict[str, os.DirEntry],
    scanner: Scanner,
) -> list[Source]:
    """The class folders inside each of train/, val/ and test/."""
    split_paths = {entry.path for entry in splits.values()}
    for entry in files:
        scanner.skip(entry.path, "not inside train/, val/ or test/")
    for entry in subfolders:
        if entry.path not in split_paths:
            scanner.skip(entry.path, "not a train/, val/ or test/ folder")
    sources = []
    for split in ("train", "val", "test"):
        if split not in splits:
            continue
        ancestors = (os.path.realpath(root), os.path.realpath(splits[split].path))
        listing = scanner.list_folder(splits[split].path)
        if listing is None:
            continue
        class_folders, loose = listing
        for entry in loose:
            scanner.skip(entry.path, "not inside a class folder")
        sources.extend(Source(entry.name, entry.path, split, ancestors) for entry in class_folders)
    return sources


def _folder_name(path: str) -> str:
    """A folder's name as a class name (the path itself for a filesystem root)."""
    return os.path.basename(path.rstrip(os.sep)) or path


def _entry_reason(entry: os.DirEntry, exc: OSError) -> str:
    """A short reason for a folder entry whose target cannot be looked at."""
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT:
        return "broken symlink" if _is_link(entry) else "vanished while scanning"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "cannot read: permission denied" + (" (links into an unreadable folder)" if _is_link(entry) else "")
    return f"cannot read: {exc.strerror or exc}"


def _is_link(entry: os.DirEntry) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _folder_reason(exc: OSError) -> str:
    """A short reason for a folder that cannot be listed."""
    if isinstance(exc, PermissionError):
        return "cannot read folder: permission denied"
    return f"cannot read folder: {exc.strerror or exc}"

