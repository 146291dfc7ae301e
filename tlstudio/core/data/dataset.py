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

Images nested deeper inside a class folder belong to that class. Walking the
folders safely is :mod:`tlstudio.core.data.scanning`'s job. The scan
reads headers only (:func:`tlstudio.core.data.images.probe_image`) so ten thousand
files take seconds; :func:`tlstudio.core.data.verify.verify_dataset` decodes every image when the user
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
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from tlstudio.core.data.scanning import PROGRESS_EVERY, Found, Scanner, check_folders, find_sources
from tlstudio.core.spec.errors import DataError
from tlstudio.core.spec.events import Message, OnEvent, Progress, ShouldStop, ignore_event, never_stop
from tlstudio.core.spec.recipe import DataSpec
from tlstudio.core.spec.text import counted

_PARTIAL_HASH_BYTES = 64 * 1024


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
    roots = check_folders(folders)
    scanner = Scanner(on_event, should_stop)
    layout, sources = find_sources(roots, scanner)
    excluded = set(excluded_classes)
    unknown = sorted(excluded - {source.class_name for source in sources})
    if unknown:
        on_event(Message(f"Excluded classes not found in the folders: {_names(unknown)}.", level="warning"))

    scanner.class_folders = {os.path.realpath(source.folder) for source in sources}
    found: list[Found] = []
    for source in sources:
        if source.class_name not in excluded:
            found.extend(scanner.scan_class_folder(source))

    all_classes = sorted({source.class_name for source in sources})
    usable = sorted({entry.class_name for entry in found})
    labels = {name: label for label, name in enumerate(usable)}
    duplicates = _find_duplicates([entry.path for entry in found], {e.path: e.size_bytes for e in found}, scanner)
    group_of = {path: index for index, group in enumerate(duplicates) for path in group}
    scanner.finish()

    by_split: dict[str | None, list[Found]] = defaultdict(list)
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
    return without_files(relabelled, failures)



def _find_duplicates(paths: list[str], sizes: dict[str, int], scanner: Scanner) -> tuple[tuple[str, ...], ...]:
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
        if (done + len(group)) // PROGRESS_EVERY > done // PROGRESS_EVERY or done + len(group) == total:
            scanner.on_event(Progress("scan", done + len(group), total, "looking for duplicate files"))
        done += len(group)
        for same_head in by_head:
            if sizes[same_head[0]] <= _PARTIAL_HASH_BYTES:
                groups.append(same_head)
            else:
                groups.extend(_group_by(same_head, lambda p: _digest(p, None), scanner))
    return tuple(sorted(tuple(sorted(group)) for group in groups))


def _group_by(paths: list[str], key: Callable[[str], str | None], scanner: Scanner) -> list[list[str]]:
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
    entries: list[Found], val_fraction: float, seed: int, group_of: dict[str, int]
) -> tuple[list[Found], list[Found]]:
    """Split ``entries`` into (train, val) per class, keeping duplicate groups together.

    Each class's files are ranked by a seeded hash of their key; validation
    takes files in rank order until it holds ``round(n * val_fraction)`` of
    the class's ``n`` images (at least 1 and at most n - 1 when n >= 2). A group
    of identical files moves as one unit and counts for the class of its first
    member, so it is never cut in two.
    """
    units: dict[object, list[Found]] = defaultdict(list)
    for entry in entries:
        units[group_of.get(entry.path, entry.path)].append(entry)
    by_class: dict[str, list[list[Found]]] = defaultdict(list)
    for unit in units.values():
        unit.sort(key=lambda e: e.key)
        by_class[unit[0].class_name].append(unit)

    train: list[Found] = []
    val: list[Found] = []
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
    return hashlib.blake2b(f"{seed}\0{key}".encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


def _items(entries: list[Found], labels: dict[str, int]) -> tuple[ImageItem, ...]:
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
                f"{counted(len(crossing), 'group')} of identical files appear in more than one of train/, val/ and "
                f"test/ (e.g. {', '.join(crossing[0])}); validation scores will look better than they are.",
                level="warning",
            )
        )



def _names(names: Iterable[str]) -> str:
    """Class names quoted and joined for a message."""
    return ", ".join(repr(name) for name in names)


def without_files(dataset: Dataset, failures: dict[str, str]) -> Dataset:
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
