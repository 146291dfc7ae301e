"""Scan image folders into classes, a train/validation(/test) split and a report.

Three folder layouts are accepted:

* ``class-folders`` — one root whose sub-folders are the classes
  (``root/cats/…``, ``root/dogs/…``);
* ``split-folders`` — one root holding ``train/`` and ``val/`` (and optionally
  ``test/``), each with the same class sub-folders; that split is used as given.
  A root with ``train/`` and ``test/`` but no ``val/`` gets its validation
  images drawn from ``train/``;
* ``folder-per-class`` — several folders, each one class named after the
  folder, or a single folder that directly contains images (one class).

Images nested deeper inside a class folder belong to that class. The scan
reads headers only (:func:`tlstudio.core.data.images.probe_image`) so ten thousand
files take seconds; :func:`verify_dataset` decodes every image when the user
asks for it. Files that cannot be used are skipped with a reason, never fatal:
hidden files and folders, ``__MACOSX``, system files, empty files, non-images,
unsupported formats, images over the pixel limit, unreadable files, broken
symlinks and symlink loops (folders are tracked by their real path, so no
folder is scanned twice).

The validation split is stratified and seeded: each class sends about
``val_fraction`` of its images (at least one when it has two or more) to
validation. Byte-identical files always land on the same side and are reported
as duplicates. Which files go to validation depends only on the seed and each
file's path inside its class folder, so moving the whole dataset elsewhere keeps
the split, and adding a few images changes it only a little.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import stat
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from tlstudio.core.data import images
from tlstudio.core.spec.errors import Cancelled, DataError, ImageError
from tlstudio.core.spec.events import Message, OnEvent, Progress, ShouldStop, ignore_event, never_stop
from tlstudio.core.spec.recipe import DataSpec

LAYOUTS = ("class-folders", "split-folders", "folder-per-class")

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
_PARTIAL_HASH_BYTES = 64 * 1024
_PROGRESS_EVERY = 200


@dataclass(frozen=True)
class ImageItem:
    """One usable image: its path, its label (an index into ``Dataset.classes``) and its size."""

    path: str
    label: int
    size_bytes: int


@dataclass(frozen=True)
class SkippedFile:
    """A file or folder left out of the dataset, with a short reason for the report."""

    path: str
    reason: str


@dataclass(frozen=True)
class Dataset:
    """The result of a scan: classes, the split, and everything that was left out.

    ``classes`` holds the sorted names of classes with at least one usable
    image; labels index into it. ``empty_classes`` are class folders with no
    usable image and ``excluded_classes`` those the user chose to leave out.
    ``duplicates`` lists groups of byte-identical files. ``class_sources`` pairs
    each class found (usable, empty or excluded) with the folders it came from.
    """

    classes: tuple[str, ...]
    train: tuple[ImageItem, ...]
    val: tuple[ImageItem, ...]
    test: tuple[ImageItem, ...]
    skipped: tuple[SkippedFile, ...]
    empty_classes: tuple[str, ...]
    excluded_classes: tuple[str, ...]
    duplicates: tuple[tuple[str, ...], ...]
    layout: str
    class_sources: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        """Usable images per class, over all splits, in label order."""
        counts = dict.fromkeys(self.classes, 0)
        for item in (*self.train, *self.val, *self.test):
            counts[self.classes[item.label]] += 1
        return counts

    @property
    def class_folders(self) -> dict[str, tuple[str, ...]]:
        """The folders each class was read from (empty and excluded classes included)."""
        if self.class_sources:
            return dict(self.class_sources)
        paths: dict[str, list[str]] = defaultdict(list)
        for item in (*self.train, *self.val, *self.test):
            paths[self.classes[item.label]].append(os.path.dirname(item.path))
        return {name: (os.path.commonpath(folders),) for name, folders in paths.items()}

    def split_counts(self) -> dict[str, dict[str, int]]:
        """Usable images per class in each of ``train``, ``val`` and ``test``."""
        result = {}
        for split, items in (("train", self.train), ("val", self.val), ("test", self.test)):
            counts = dict.fromkeys(self.classes, 0)
            for item in items:
                counts[self.classes[item.label]] += 1
            result[split] = counts
        return result

    def problems(self) -> list[str]:
        """Why this dataset cannot be trained on, one sentence each; empty when it can."""
        problems = []
        counts = self.counts
        if len(self.classes) < 2:
            found = ", ".join(repr(name) for name in self.classes) or "none"
            empty = f" Classes without usable images: {_names(self.empty_classes)}." if self.empty_classes else ""
            problems.append(
                f"Training needs at least 2 classes with usable images; found {len(self.classes)} ({found}).{empty} "
                "Give one folder per class, e.g. DIR/cats/... and DIR/dogs/..."
            )
        small = [name for name, count in counts.items() if count < 2]
        if small:
            listed = ", ".join(f"{name!r} ({counts[name]} image{'s' if counts[name] != 1 else ''})" for name in small)
            problems.append(
                f"Every class needs at least 2 images; these have fewer: {listed}. "
                "Add images to them or exclude them."
            )
        no_train = [name for name, count in self.split_counts()["train"].items() if count == 0]
        if no_train and self.classes:
            problems.append(
                f"These classes have no training images: {_names(no_train)}. Add images under train/<class>/."
            )
        if self.classes and not self.val:
            problems.append(
                "There are no validation images: every class is too small to spare one, or its files are "
                "copies of each other. Add more distinct images per class (or images under val/<class>/)."
            )
        return problems

    def require_trainable(self) -> None:
        """Raise DataError naming the classes at fault when training cannot start."""
        problems = self.problems()
        if problems:
            raise DataError("These images cannot be used for training yet. " + " ".join(problems))

    def to_summary(self) -> dict:
        """A JSON-ready report of the scan, as ``tlstudio data --json`` prints it."""
        counts = self.counts
        per_split = self.split_counts()
        folders = self.class_folders
        skipped_by_reason: dict[str, int] = defaultdict(int)
        for skipped in self.skipped:
            skipped_by_reason[skipped.reason.split(" (")[0]] += 1
        problems = self.problems()
        return {
            "layout": self.layout,
            "classes": [
                {
                    "name": name,
                    "label": label,
                    "images": counts[name],
                    "train": per_split["train"][name],
                    "val": per_split["val"][name],
                    "test": per_split["test"][name],
                    "folders": list(folders.get(name, ())),
                }
                for label, name in enumerate(self.classes)
            ],
            "total_images": sum(counts.values()),
            "train_images": len(self.train),
            "val_images": len(self.val),
            "test_images": len(self.test),
            "empty_classes": list(self.empty_classes),
            "excluded_classes": list(self.excluded_classes),
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "skipped_by_reason": dict(sorted(skipped_by_reason.items())),
            "duplicates": [list(group) for group in self.duplicates],
            "trainable": not problems,
            "problems": problems,
        }


def scan_dataset(
    folders: Sequence[str | Path],
    val_fraction: float = 0.2,
    seed: int = 0,
    excluded_classes: Sequence[str] = (),
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
) -> Dataset:
    """Scan ``folders`` (see the module docstring for the layouts) into a :class:`Dataset`.

    Reports ``Progress(task="scan")`` events and raises Cancelled when
    ``should_stop()`` turns true. Raises DataError when a folder is missing or
    is not a folder, or when ``val_fraction`` is outside (0, 1).
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(
            "The validation fraction must be between 0 and 1 (exclusive), e.g. 0.2. "
            f"Received: val_fraction={val_fraction!r}"
        )
    roots = _check_folders(folders)
    scanner = _Scanner(on_event, should_stop)
    layout, sources = _find_sources(roots, scanner)
    excluded = set(excluded_classes)
    unknown = sorted(excluded - {source.class_name for source in sources})
    if unknown:
        on_event(Message(f"Excluded classes not found in the folders: {_names(unknown)}.", level="warning"))

    scanner.class_folders = {os.path.realpath(source.folder) for source in sources}
    found: list[_Found] = []
    for source in sources:
        if source.class_name not in excluded:
            found.extend(scanner.scan_class_folder(source))

    all_classes = sorted({source.class_name for source in sources})
    usable = sorted({entry.class_name for entry in found})
    labels = {name: label for label, name in enumerate(usable)}
    duplicates = _find_duplicates([entry.path for entry in found], {e.path: e.size_bytes for e in found}, scanner)
    group_of = {path: index for index, group in enumerate(duplicates) for path in group}
    scanner.finish()

    by_split: dict[str | None, list[_Found]] = defaultdict(list)
    for entry in found:
        by_split[entry.split].append(entry)
    if layout == "split-folders" and by_split["val"]:
        train, val = by_split["train"], by_split["val"]
        _warn_cross_split_duplicates(duplicates, {e.path: e.split for e in found}, on_event)
    else:
        if layout == "split-folders":
            on_event(Message("No usable images under val/: validation images are drawn from train/.", level="info"))
        train, val = _stratified_split(by_split["train"] + by_split[None], val_fraction, seed, group_of)

    class_sources = defaultdict(list)
    for source in sources:
        class_sources[source.class_name].append(source.folder)
    return Dataset(
        classes=tuple(usable),
        train=_items(train, labels),
        val=_items(val, labels),
        test=_items(by_split["test"], labels),
        skipped=tuple(SkippedFile(path, reason) for path, reason in sorted(scanner.skipped.items())),
        empty_classes=tuple(name for name in all_classes if name not in labels and name not in excluded),
        excluded_classes=tuple(name for name in all_classes if name in excluded),
        duplicates=duplicates,
        layout=layout,
        class_sources=tuple((name, tuple(class_sources[name])) for name in all_classes),
    )


def scan_data_spec(spec: DataSpec, **kw) -> Dataset:
    """Scan the folders of a recipe's data section, its excluded files and relabels applied;
    ``kw`` goes to :func:`scan_dataset`."""
    dataset = scan_dataset(
        spec.folders,
        val_fraction=spec.val_fraction,
        seed=spec.seed,
        excluded_classes=spec.excluded_classes,
        **kw,
    )
    return apply_corrections(dataset, spec, kw.get("on_event", ignore_event))


def apply_corrections(dataset: Dataset, spec: DataSpec, on_event: OnEvent = ignore_event) -> Dataset:
    """``dataset`` without ``spec.excluded_files`` and with ``spec.relabels`` applied (the files stay as they are).

    Excluded images join ``skipped``; a relabelled image keeps its split. A
    relabel to a class the data does not have is ignored with a warning.
    Applying the same corrections twice changes nothing.
    """
    if not spec.excluded_files and not spec.relabels:
        return dataset
    key = lambda path: os.path.normcase(os.path.abspath(path))  # noqa: E731 - one-line path key
    excluded = {key(path) for path in spec.excluded_files}
    relabels = {key(path): name for path, name in spec.relabels}
    unknown = sorted({name for name in relabels.values() if name not in dataset.classes})
    if unknown:
        on_event(Message(f"Relabels to classes the data does not have are ignored: {_names(unknown)}.", "warning"))
    failures = {item.path: "excluded in the project" for item in (*dataset.train, *dataset.val, *dataset.test)
                if key(item.path) in excluded}
    labels = {name: index for index, name in enumerate(dataset.classes)}

    def corrected(items: tuple[ImageItem, ...]) -> tuple[ImageItem, ...]:
        return tuple(
            dataclasses.replace(item, label=labels[relabels[key(item.path)]])
            if relabels.get(key(item.path)) in labels else item
            for item in items
        )

    relabelled = dataclasses.replace(
        dataset, train=corrected(dataset.train), val=corrected(dataset.val), test=corrected(dataset.test)
    )
    return _without(relabelled, failures)


def verify_dataset(
    dataset: Dataset,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
) -> Dataset:
    """Decode every image fully and move those that fail into ``skipped``.

    The header scan cannot see truncated or corrupt pixel data; this step can.
    Classes left without images move to ``empty_classes`` and labels are
    renumbered. Reports ``Progress(task="verify")``; raises Cancelled on request.
    """
    paths = [item.path for item in (*dataset.train, *dataset.val, *dataset.test)]
    failures: dict[str, str] = {}
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tlstudio-verify") as pool:
        futures = {pool.submit(_decode_reason, path): path for path in paths}
        for done, future in enumerate(as_completed(futures), start=1):
            if should_stop():
                pool.shutdown(wait=False, cancel_futures=True)
                raise Cancelled("Verifying the images was cancelled.")
            reason = future.result()
            if reason is not None:
                failures[futures[future]] = reason
            if done % _PROGRESS_EVERY == 0 or done == len(paths):
                on_event(Progress("verify", done, len(paths), f"{len(failures)} unusable"))
    if not failures:
        return dataset
    return _without(dataset, failures)


@dataclass(frozen=True)
class _Source:
    """A folder whose images all belong to one class, in one split (None: to be split).

    ``ancestors`` are the real paths of the folders listed above it (the root,
    the split folder): a symlink back to one of them is a loop.
    """

    class_name: str
    folder: str
    split: str | None = None
    ancestors: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Found:
    """A usable image found while scanning."""

    class_name: str
    path: str
    size_bytes: int
    split: str | None
    key: str  # the class name and the path inside the class folder: what the split hashes


class _Scanner:
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
        if self.files_seen % _PROGRESS_EVERY == 0:
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
        """'folder', 'file' or 'skipped' (recorded with its reason)."""
        is_dir = entry.is_dir()
        lower = entry.name.lower()
        if entry.name.startswith("."):
            self.skip(entry.path, "hidden folder" if is_dir else "hidden file")
        elif is_dir and lower in _SYSTEM_FOLDERS:
            self.skip(entry.path, _SYSTEM_FOLDERS[lower])
        elif is_dir:
            return "folder"
        elif not entry.is_file():
            broken = entry.is_symlink() and not os.path.exists(entry.path)
            self.skip(entry.path, "broken symlink" if broken else "not a regular file")
        elif lower in _SYSTEM_FILES:
            self.skip(entry.path, "system file")
        else:
            return "file"
        return "skipped"

    def scan_class_folder(self, source: _Source) -> list[_Found]:
        """Every usable image under ``source.folder``, sub-folders included."""
        found: list[_Found] = []
        stack: list[tuple[str, tuple[str, ...]]] = [(source.folder, source.ancestors)]
        while stack:
            folder, ancestors = stack.pop()
            self.check_stop()
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
                    found.append(_Found(source.class_name, entry.path, size_bytes, source.split, key))
            stack.extend((entry.path, ancestors + (real,)) for entry in reversed(subfolders))
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
        try:
            images.probe_image(entry.path)
        except ImageError as exc:
            self.skip(entry.path, exc.reason)
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


def _check_folders(folders: Sequence[str | Path]) -> list[str]:
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
        if not os.path.exists(path):
            raise DataError(f"The image folder does not exist: {str(folder)!r}. Check the path. Received: {path!r}")
        if not os.path.isdir(path):
            raise DataError(
                f"Expected a folder of images, but this is a file: {str(folder)!r}. "
                "Give the folder that holds the class sub-folders."
            )
        roots.append(path)
    return roots


def _find_sources(roots: list[str], scanner: _Scanner) -> tuple[str, list[_Source]]:
    """Decide the layout and list the class folders; loose files are recorded as skipped."""
    if len(roots) > 1:
        return "folder-per-class", [_Source(_folder_name(root), root) for root in roots]
    root = roots[0]
    listing = scanner.list_folder(root)
    if listing is None:
        raise DataError(f"Cannot read the image folder {root!r}: permission denied. Check its permissions.")
    subfolders, files = listing
    splits = _split_folders(subfolders)
    if "train" in splits and ("val" in splits or "test" in splits):
        return "split-folders", _split_sources(root, subfolders, files, splits, scanner)
    if scanner.holds_an_image(files):
        return "folder-per-class", [_Source(_folder_name(root), root)]
    for entry in files:
        scanner.skip(entry.path, "not inside a class folder")
    ancestors = (os.path.realpath(root),)
    return "class-folders", [_Source(entry.name, entry.path, None, ancestors) for entry in subfolders]


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
    scanner: _Scanner,
) -> list[_Source]:
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
        sources.extend(_Source(entry.name, entry.path, split, ancestors) for entry in class_folders)
    return sources


def _folder_name(path: str) -> str:
    """A folder's name as a class name (the path itself for a filesystem root)."""
    return os.path.basename(path.rstrip(os.sep)) or path


def _folder_reason(exc: OSError) -> str:
    """A short reason for a folder that cannot be listed."""
    if isinstance(exc, PermissionError):
        return "cannot read folder: permission denied"
    return f"cannot read folder: {exc.strerror or exc}"


def _find_duplicates(paths: list[str], sizes: dict[str, int], scanner: _Scanner) -> tuple[tuple[str, ...], ...]:
    """Groups of byte-identical files, each sorted, in path order.

    Only files of equal size are compared: first by a hash of their first
    64 KiB, then, when that matches, by a hash of the whole file.
    """
    by_size: dict[int, list[str]] = defaultdict(list)
    for path in paths:
        by_size[sizes[path]].append(path)
    candidates = [group for group in by_size.values() if len(group) > 1]
    total = sum(len(group) for group in candidates)
    done = 0
    groups = []
    for group in candidates:
        by_head = _group_by(group, lambda p: _digest(p, _PARTIAL_HASH_BYTES), scanner)
        if (done + len(group)) // _PROGRESS_EVERY > done // _PROGRESS_EVERY or done + len(group) == total:
            scanner.on_event(Progress("scan", done + len(group), total, "looking for duplicate files"))
        done += len(group)
        for same_head in by_head:
            if sizes[same_head[0]] <= _PARTIAL_HASH_BYTES:
                groups.append(same_head)
            else:
                groups.extend(_group_by(same_head, lambda p: _digest(p, None), scanner))
    return tuple(sorted(tuple(sorted(group)) for group in groups))


def _group_by(paths: list[str], key: Callable[[str], str | None], scanner: _Scanner) -> list[list[str]]:
    """Groups of two or more paths with the same (non-None) key."""
    groups: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        scanner.check_stop()
        value = key(path)
        if value is not None:
            groups[value].append(path)
    return [group for group in groups.values() if len(group) > 1]


def _digest(path: str, limit: int | None) -> str | None:
    """A hash of the file's first ``limit`` bytes (all of it for None); None if unreadable."""
    digest = hashlib.blake2b(digest_size=20)
    try:
        with open(path, "rb") as handle:
            if limit is not None:
                digest.update(handle.read(limit))
            else:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _stratified_split(
    entries: list[_Found], val_fraction: float, seed: int, group_of: dict[str, int]
) -> tuple[list[_Found], list[_Found]]:
    """Split ``entries`` into (train, val) per class, keeping duplicate groups together.

    Each class's files are ranked by a seeded hash of their key; validation
    takes files in rank order until it holds ``round(n * val_fraction)`` of
    the class's ``n`` images (at least 1 and at most n - 1 when n >= 2). A group
    of identical files moves as one unit and counts for the class of its first
    member, so it is never cut in two.
    """
    units: dict[object, list[_Found]] = defaultdict(list)
    for entry in entries:
        units[group_of.get(entry.path, entry.path)].append(entry)
    by_class: dict[str, list[list[_Found]]] = defaultdict(list)
    for unit in units.values():
        unit.sort(key=lambda e: e.key)
        by_class[unit[0].class_name].append(unit)

    train: list[_Found] = []
    val: list[_Found] = []
    for class_units in by_class.values():
        class_units.sort(key=lambda unit: _rank(seed, unit[0].key))
        total = sum(len(unit) for unit in class_units)
        target = 0 if total < 2 else min(total - 1, max(1, math.floor(total * val_fraction + 0.5)))
        taken = 0
        for unit in class_units:
            if taken + len(unit) <= target:
                val.extend(unit)
                taken += len(unit)
            else:
                train.extend(unit)
    return train, val


def _rank(seed: int, key: str) -> str:
    """A seeded pseudo-random sort key that depends only on ``key``."""
    return hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=16).hexdigest()


def _items(entries: list[_Found], labels: dict[str, int]) -> tuple[ImageItem, ...]:
    """Labelled items in path order."""
    return tuple(
        ImageItem(entry.path, labels[entry.class_name], entry.size_bytes)
        for entry in sorted(entries, key=lambda e: e.path)
    )


def _warn_cross_split_duplicates(
    duplicates: tuple[tuple[str, ...], ...], split_of: dict[str, str | None], on_event: OnEvent
) -> None:
    """Warn when identical files sit in different given splits: validation would flatter the model."""
    crossing = [group for group in duplicates if len({split_of[path] for path in group}) > 1]
    if crossing:
        on_event(
            Message(
                f"{len(crossing)} group(s) of identical files appear in more than one of train/, val/ and "
                f"test/ (e.g. {', '.join(crossing[0])}); validation scores will look better than they are.",
                level="warning",
            )
        )


def _decode_reason(path: str) -> str | None:
    """Why ``path`` cannot be decoded, or None when it decodes."""
    try:
        images.load_rgb(path)
    except ImageError as exc:
        return exc.reason
    except MemoryError:
        return "too large to decode (out of memory)"
    return None


def _without(dataset: Dataset, failures: dict[str, str]) -> Dataset:
    """``dataset`` minus the files in ``failures``, which join ``skipped``; labels renumbered."""
    kept = {
        split: [item for item in items if item.path not in failures]
        for split, items in (("train", dataset.train), ("val", dataset.val), ("test", dataset.test))
    }
    used = sorted({dataset.classes[item.label] for items in kept.values() for item in items})
    labels = {name: label for label, name in enumerate(used)}

    def relabel(items: list[ImageItem]) -> tuple[ImageItem, ...]:
        return tuple(ImageItem(i.path, labels[dataset.classes[i.label]], i.size_bytes) for i in items)

    emptied = [name for name in dataset.classes if name not in labels]
    skipped = [*dataset.skipped, *(SkippedFile(path, reason) for path, reason in failures.items())]
    duplicates = []
    for group in dataset.duplicates:
        remaining = tuple(path for path in group if path not in failures)
        if len(remaining) > 1:
            duplicates.append(remaining)
    return Dataset(
        classes=tuple(used),
        train=relabel(kept["train"]),
        val=relabel(kept["val"]),
        test=relabel(kept["test"]),
        skipped=tuple(sorted(skipped, key=lambda s: s.path)),
        empty_classes=tuple(sorted({*dataset.empty_classes, *emptied})),
        excluded_classes=dataset.excluded_classes,
        duplicates=tuple(duplicates),
        layout=dataset.layout,
        class_sources=dataset.class_sources,
    )


def _names(names: Iterable[str]) -> str:
    """Class names quoted and joined for a message."""
    return ", ".join(repr(name) for name in names)
