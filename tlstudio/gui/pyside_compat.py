"""PySide6 internals that TL Studio relies on, in one place, each pinned by a test.

PySide6 replaces ``builtins.__import__`` with its ``__feature_import__``,
which reads the whole source file of every module imported afterwards
(``inspect.getsource``) to see whether it uses ``from __feature__ import``.
TensorFlow imports thousands of modules, so importing it after PySide6 takes
about twice as long. TL Studio never uses ``__feature__``, so
:func:`plain_imports` restores Python's own ``__import__`` (which PySide6
keeps as ``builtins.__orig_import__``) while TensorFlow loads.
"""

from __future__ import annotations

import builtins
import contextlib
from typing import Iterator


def feature_import_active() -> bool:
    """Whether PySide6's feature-checking ``__import__`` is in place."""
    original = getattr(builtins, "__orig_import__", None)
    return original is not None and builtins.__import__ is not original


@contextlib.contextmanager
def plain_imports() -> Iterator[None]:
    """Python's own ``__import__`` inside the block (for every thread), PySide6's again after it."""
    if not feature_import_active():
        yield
        return
    feature_import = builtins.__import__
    builtins.__import__ = builtins.__orig_import__
    try:
        yield
    finally:
        builtins.__import__ = feature_import
