"""Decode every image fully, to find what a header-only scan cannot see.

A PNG whose data chunk is corrupt, a JPEG cut short by a failed copy: their
headers look fine, so the scan keeps them. :func:`verify_images` decodes each
image (in a few threads, reporting progress and honouring a stop request) and
names the ones that fail; :func:`verify_dataset` returns the dataset without
them.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from tlstudio.core.data import images
from tlstudio.core.data.dataset import Dataset, SkippedFile, without_files
from tlstudio.core.data.scanning import PROGRESS_EVERY
from tlstudio.core.spec.errors import Cancelled, ImageError
from tlstudio.core.spec.events import OnEvent, Progress, ShouldStop, ignore_event, never_stop
from tlstudio.core.spec.text import counted


_SUSPICIOUS_REASONS = ("truncated or corrupt", "empty file", "cannot read")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def suspicious_files(dataset: Dataset) -> tuple[SkippedFile, ...]:
    """Skipped files that look like damaged images: a hint that others, whose headers passed, may be damaged too.

    Damaged headers, empty or unreadable files, and files named as images that
    are not images. The Data page offers :func:`verify_images` when there are any.
    """
    return tuple(
        entry for entry in dataset.skipped
        if entry.reason.startswith(_SUSPICIOUS_REASONS)
        or (entry.reason == "not an image" and entry.path.lower().endswith(_IMAGE_SUFFIXES))
    )


def read_summary(classified: int, unreadable: int, verb: str = "classified") -> str:
    """The one-line count users see after evaluating or predicting: "4 classified, 2 could not be read"."""
    if not unreadable:
        return f"{classified} {verb}"
    return f"{classified} {verb}, {unreadable} could not be read"


def name_some(paths: list[str], limit: int = 3) -> str:
    """The first ``limit`` paths, joined, with "and N more" for the rest."""
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


@dataclass(frozen=True)
class VerifyReport:
    """What a full decode found: how many images were checked, the bad ones, and the dataset without them."""

    checked: int
    bad: tuple[SkippedFile, ...]
    dataset: Dataset

    def summary(self) -> str:
        """One line for the user, e.g. "120 images decode; 2 could not be read"."""
        good = self.checked - len(self.bad)
        if not self.bad:
            return "The image decodes." if self.checked == 1 else f"All {counted(self.checked, 'image')} decode."
        verb = "decodes" if good == 1 else "decode"
        return f"{counted(good, 'image')} {verb}; {len(self.bad)} could not be read and are left out."


def verify_images(
    dataset: Dataset,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
) -> VerifyReport:
    """Decode every image of ``dataset`` fully and report those that fail.

    The header scan cannot see truncated or corrupt pixel data; this step can.
    Reports ``Progress(task="verify")`` and raises Cancelled when
    ``should_stop()`` turns true; the report's ``dataset`` has the bad images
    moved into ``skipped`` (see :func:`verify_dataset`).
    """
    items = (*dataset.train, *dataset.val, *dataset.test)
    paths = [item.path for item in items]
    failures: dict[str, str] = {}
    on_event(Progress("verify", 0, len(paths), "decoding every image"))
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tlstudio-verify") as pool:
        futures = {pool.submit(_decode_reason, path, should_stop): path for path in paths}
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                if should_stop():
                    raise Cancelled("Verifying the images was cancelled.")
                reason = future.result()
                if reason is not None:
                    failures[futures[future]] = reason
                if done % PROGRESS_EVERY == 0 or done == len(paths):
                    on_event(Progress("verify", done, len(paths), f"{len(failures)} could not be read"))
        except Cancelled:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    bad = tuple(SkippedFile(path, failures[path]) for path in sorted(failures))
    return VerifyReport(len(paths), bad, without_files(dataset, failures) if failures else dataset)


def verify_dataset(
    dataset: Dataset,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
) -> Dataset:
    """``dataset`` with every image that does not decode moved into ``skipped``.

    Classes left without images move to ``empty_classes`` and labels are
    renumbered. Reports ``Progress(task="verify")``; raises Cancelled on request.
    """
    return verify_images(dataset, on_event, should_stop).dataset


def _decode_reason(path: str, should_stop: ShouldStop = never_stop) -> str | None:
    """Why ``path`` cannot be decoded, or None when it decodes (or when stopping: no time spent)."""
    if should_stop():
        return None
    try:
        images.load_rgb(path)
    except ImageError as exc:
        return exc.reason
    except MemoryError:
        return "too large to decode (out of memory)"
    return None
