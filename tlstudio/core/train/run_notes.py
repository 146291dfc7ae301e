"""A run's title and notes, written by the user and kept in the run folder (``notes.json``).

They turn runs into experiments one can tell apart ("lite0, cut earlier"). The
file is written whole or not at all; a missing or damaged file reads as no
title and no notes, so it never hides the run itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tlstudio.core.spec.errors import UserError
from tlstudio.core.train.runs import write_json

NOTES_FILE = "notes.json"
MAX_TITLE = 200


@dataclass(frozen=True)
class RunNotes:
    """The user's title for a run (empty: the folder's name is shown) and free-text notes."""

    title: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if len(self.title) > MAX_TITLE or "\n" in self.title:
            raise UserError(
                f"A run title is one line of at most {MAX_TITLE} characters. Received: {self.title[:60]!r}…"
            )


def read_notes(run_dir: str | os.PathLike[str]) -> RunNotes:
    """The run's title and notes; empty ones when there are none or the file cannot be read."""
    try:
        raw = json.loads((Path(run_dir) / NOTES_FILE).read_text(encoding="utf-8"))
        return RunNotes(str(raw.get("title", "")), str(raw.get("notes", "")))
    except (OSError, ValueError, AttributeError, UserError):
        return RunNotes()


def write_notes(run_dir: str | os.PathLike[str], notes: RunNotes) -> Path:
    """Store the title and notes in the run folder (atomically); UserError when the folder is not writable."""
    try:
        return write_json(Path(run_dir) / NOTES_FILE, {"title": notes.title, "notes": notes.notes})
    except OSError as error:
        raise UserError(
            f"Cannot save the notes of run {str(run_dir)!r}: {error.strerror or error}. "
            "Check that the run folder is writable."
        ) from None
