"""The one way counts, durations, shapes and the version are written for people."""

from __future__ import annotations

from tlstudio.core.spec.text import article, counted, duration_text, shape_text, tlstudio_version


def test_counts_agree_with_their_number():
    assert counted(1, "class") == "1 class"
    assert counted(2, "class") == "2 classes"
    assert counted(0, "image") == "0 images"
    assert counted(1, "image") == "1 image"
    assert counted(1234, "file") == "1,234 files"
    assert counted(3, "unreadable image") == "3 unreadable images"
    assert counted(2, "training batch") == "2 training batches"
    assert counted(2, "cactus", "cacti") == "2 cacti"


def test_the_article_follows_how_the_number_is_said():
    assert [article(n) for n in (1, 3, 8, 11, 18, 80, 100, 110, 851, 1100, 11000, 18500, 110000)] == [
        "a", "a", "an", "an", "an", "an", "a", "a", "an", "a", "an", "an", "a"
    ]


def test_durations():
    assert duration_text(75.2) == "1:15"
    assert duration_text(3725) == "1:02:05"
    assert duration_text(65) == "1:05"
    assert duration_text(0) == "0:00"
    assert duration_text(None) == "?" and duration_text(float("nan")) == "?" and duration_text(-1) == "?"
    assert duration_text(None, unknown="…") == "…"


def test_shapes_leave_out_the_batch_axis():
    assert shape_text((None, 14, 14, 512)) == "14x14x512"
    assert shape_text((None, 7, 7, 512), separator=" × ") == "7 × 7 × 512"
    assert shape_text((None, None, None, 3)) == "?x?x3"
    assert shape_text((None,)) == "scalar"
    assert shape_text((4, 2)) == "4x2"


def test_version_is_the_installed_one_or_unknown(monkeypatch):
    import importlib.metadata

    assert tlstudio_version() == importlib.metadata.version("tlstudio")

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert tlstudio_version() == "unknown"
