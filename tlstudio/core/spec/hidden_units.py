"""The one reading of the head's hidden-layer sizes typed by a person.

The app's "Hidden units" field and ``tlstudio train --hidden`` both accept
sizes separated by commas, spaces or semicolons: ``"256, 128"``,
``"256 128"`` and ``"256;128"`` are each two layers.
"""

from __future__ import annotations

import re

from tlstudio.core.spec.errors import RecipeError

MAX_UNITS = 16_384
"""The largest hidden layer: 1,280 features into 16,384 units is already 21 million weights."""
MAX_LAYERS = 8

_SEPARATORS = re.compile(r"[,;\s]+")
_WHOLE_NUMBER = re.compile(r"-?[0-9]+")


def parse_hidden_units(text: str) -> tuple[int, ...]:
    """``"256, 128"`` → ``(256, 128)``; empty → no hidden layer. RecipeError when not positive whole numbers."""
    parts = [part for part in _SEPARATORS.split(text.strip()) if part]
    if not all(_WHOLE_NUMBER.fullmatch(part) for part in parts):
        raise RecipeError(
            "Hidden units must be whole numbers separated by commas, e.g. '256, 128', or empty for none. "
            f"Received: {text!r}"
        )
    units = tuple(int(part) for part in parts)
    if any(unit <= 0 for unit in units):
        raise RecipeError(f"Hidden layer sizes must be positive. Received: {text!r}")
    if any(unit > MAX_UNITS for unit in units):
        raise RecipeError(
            f"A hidden layer can have at most {MAX_UNITS:,} units (typical heads use 64 to 1,024). "
            f"Received: {text!r}"
        )
    if len(units) > MAX_LAYERS:
        raise RecipeError(f"The head can have at most {MAX_LAYERS} hidden layers. Received: {text!r}")
    return units


def hidden_units_text(units: tuple[int, ...]) -> str:
    """The text the parser reads back as ``units``: ``(256, 128)`` → ``"256, 128"``."""
    return ", ".join(str(unit) for unit in units)
