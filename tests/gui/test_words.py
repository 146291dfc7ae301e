"""Counts meet nouns in the singular or plural, never "1 classes"."""

from __future__ import annotations

from tlstudio.gui.words import counted


def test_counted_agrees_with_its_number():
    assert counted(1, "class") == "1 class"
    assert counted(2, "class") == "2 classes"
    assert counted(0, "image") == "0 images"
    assert counted(1, "image") == "1 image"
    assert counted(1234, "file") == "1,234 files"
    assert counted(3, "unreadable image") == "3 unreadable images"
