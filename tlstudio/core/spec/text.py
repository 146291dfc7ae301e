"""How TL Studio writes numbers for people, the same in the app, the CLI and exported files.

Counts meeting nouns (``1 class``, ``2 classes``, ``an 851-pixel patch``), durations as ``1:02:05``,
tensor shapes without the batch axis, and the installed TL Studio version.
"""

from __future__ import annotations

from typing import Sequence

_IRREGULAR = {"class": "classes", "match": "matches", "batch": "batches", "address": "addresses"}


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``counted(1, "class")`` → ``"1 class"``; ``counted(1234, "image")`` → ``"1,234 images"``, never "1 classes".

    The plural adds ``s`` unless ``plural`` is given or the last word is one of the known irregular ones.
    """
    if count == 1:
        return f"{count} {noun}"
    if plural is None:
        head, _, last = noun.rpartition(" ")
        plural = (head + " " if head else "") + _IRREGULAR.get(last, last + "s")
    return f"{count:,} {plural}"


def article(number: int) -> str:
    """The indefinite article said before ``number``: ``an`` for 8, 11, 18, 80…, 800…, 11,000; else ``a``."""
    digits = str(abs(int(number)))
    if digits.startswith("8"):
        return "an"
    return "an" if digits[:2] in ("11", "18") and len(digits) % 3 == 2 else "a"


def duration_text(seconds: float | None, unknown: str = "?") -> str:
    """``75.2`` → ``1:15``; ``3725`` → ``1:02:05``; ``unknown`` for None, NaN or a negative time."""
    if seconds is None or seconds != seconds or seconds < 0:
        return unknown
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def shape_text(shape: Sequence[int | None], separator: str = "x") -> str:
    """``(None, 14, 14, 512)`` → ``14x14x512``: the batch axis is left out, unknown sizes are ``?``."""
    dims = list(shape[1:]) if shape and shape[0] is None else list(shape)
    return separator.join("?" if d is None else str(d) for d in dims) or "scalar"


def tlstudio_version() -> str:
    """The installed TL Studio version, ``unknown`` when run from a source tree that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tlstudio")
    except PackageNotFoundError:
        return "unknown"
