"""Which existing folders an export may replace.

Replacing a destination deletes what was there, so it is allowed only when
nothing the user made can be lost: the folder is empty, or it is an earlier
TL Studio export, recognised by the ``model_card.json`` it wrote and holding
nothing but the files that card lists. A folder of documents, the current
directory, the home folder, a run folder or any folder above one of them is
never replaced, whatever the "replace" setting says.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from tlstudio.core.spec.errors import ExportError

MODEL_CARD_FILE = "model_card.json"
LABELS_FILE = "labels.txt"
REPLACE_CONTROL = "'Replace the folder if it exists' on the Export page, --overwrite on the command line"


def check_destination(target: Path, overwrite: bool, protected: Iterable[Path] = ()) -> None:
    """Raise ExportError unless ``target`` may be written (absent, empty) or replaced (an earlier export).

    ``protected`` are folders that must survive (the run being exported): the
    target may be neither one of them nor above one of them.
    """
    if not (target.exists() or target.is_symlink()):
        return
    if target.is_symlink() or not target.is_dir():
        raise ExportError(
            f"The export destination {str(target)!r} exists and is not a folder; it will not be replaced. "
            "Choose a new folder path."
        )
    _refuse_protected(target, protected)
    try:
        entries = sorted(os.listdir(target))
    except OSError as error:
        raise ExportError(
            f"Cannot read the export destination {str(target)!r}: {error.strerror or error}. Choose another folder."
        ) from None
    if not entries:
        return
    if not overwrite:
        raise ExportError(
            f"The export destination {str(target)!r} already exists. Choose a new or empty folder, "
            f"or allow replacing an earlier export ({REPLACE_CONTROL})."
        )
    foreign = foreign_entries(target, entries)
    if foreign:
        shown = ", ".join(repr(name) for name in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ExportError(
            f"The export destination {str(target)!r} is not an earlier TL Studio export (it holds {shown}), "
            f"so it will not be replaced even with {REPLACE_CONTROL}. Choose a new or empty folder."
        )


def foreign_entries(folder: Path, entries: list[str]) -> list[str]:
    """The entries of ``folder`` that an earlier export did not write (all of them without a model card)."""
    listed = _card_artifacts(folder / MODEL_CARD_FILE)
    if listed is None:
        return entries
    ours = {MODEL_CARD_FILE, LABELS_FILE, *listed}
    return [name for name in entries if name not in ours]


def _card_artifacts(card_path: Path) -> set[str] | None:
    """The artifact names a TL Studio model card lists; None when the file is not such a card."""
    try:
        if card_path.is_symlink() or not card_path.is_file() or card_path.stat().st_size > 10_000_000:
            return None
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(card, dict) or not isinstance(card.get("tlstudio_model_card"), int):
        return None
    artifacts = card.get("artifacts")
    if not isinstance(artifacts, dict):
        return None
    names = {name for name in artifacts.values() if isinstance(name, str) and name and "/" not in name}
    return {name for name in names if name not in (".", "..")}


def _refuse_protected(target: Path, protected: Iterable[Path]) -> None:
    """Refuse the current directory, the home folder, the protected folders and anything above them."""
    real = Path(os.path.realpath(target))
    keep = [Path.cwd(), Path.home(), *protected]
    for folder in keep:
        folder_real = Path(os.path.realpath(folder))
        if real == folder_real or real in folder_real.parents:
            raise ExportError(
                f"The export destination {str(target)!r} is (or holds) {str(folder)!r}, which must not be "
                "replaced. Choose a new or empty folder for the export."
            )
