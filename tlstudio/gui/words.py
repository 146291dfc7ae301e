"""Counts meeting nouns: "1 class", "2 classes", never "1 classes"."""

from __future__ import annotations

_IRREGULAR = {"class": "classes", "match": "matches", "batch": "batches"}


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``counted(1, "class")`` → ``"1 class"``; ``counted(3, "image")`` → ``"3 images"``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count:,} {plural or _IRREGULAR.get(noun, noun + 's')}"
