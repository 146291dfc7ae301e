"""*Apply to folders…*: make a project's exclusions and relabels real by moving files, with an undo log.

Only on the user's explicit request. A relabelled image moves into its new
class's folder; an excluded image moves into a folder the user names, which
must lie outside the data folders (or it would be scanned as a class).
Nothing is overwritten or deleted: a name already taken gets a ``-1``,
``-2``… suffix. The undo log (JSON, written whole before the first move)
lists every planned move; :func:`undo_moves` moves back each file that is at
its new place and whose old place is free, so an interrupted apply can be
undone too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tlstudio.core.spec.errors import DataError
from tlstudio.core.spec.recipe import DataSpec

LOG_VERSION = 1


def apply_to_folders(dataset: Any, spec: DataSpec, excluded_folder: str | os.PathLike[str]) -> tuple[DataSpec, Path]:
    """Move the files of ``spec``'s corrections; return the data spec without them and the undo log's path.

    ``dataset`` is the scan *before* corrections (its class folders say where
    a relabelled image goes). The log is written into ``excluded_folder``.
    """
    target = Path(excluded_folder).resolve()
    for folder in spec.folders:
        root = Path(folder).resolve()
        if target == root or root in target.parents:
            raise DataError(
                f"The folder for excluded images must be outside the data folders, or its images would be scanned "
                f"as a class. Choose another folder. Received: {str(target)!r} (inside {str(root)!r})"
            )
    folders = {name: paths[0] for name, paths in dataset.class_folders.items() if paths}
    moves = []
    for path, name in spec.relabels:
        if name not in folders:
            raise DataError(f"No folder for class {name!r} to move {path!r} into. Received: relabel to {name!r}")
        moves.append((path, Path(folders[name])))
    moves += [(path, target) for path in spec.excluded_files]
    target.mkdir(parents=True, exist_ok=True)
    planned: list[dict[str, str]] = []
    taken: set[Path] = set()
    for source, folder in moves:
        if not os.path.isfile(source):
            continue
        destination = _free_name(folder / Path(source).name, taken)
        taken.add(destination)
        planned.append({"from": str(Path(source).resolve()), "to": str(destination)})
    log = _free_name(target / f"tlstudio-moves-{time.strftime('%Y%m%d-%H%M%S')}.json", set())
    _write_json(log, {"tlstudio_moves": LOG_VERSION, "moves": planned})
    for move in planned:
        if not os.path.exists(move["to"]):
            shutil.move(move["from"], move["to"])
    remaining = dataclasses.replace(spec, excluded_files=(), relabels=())
    return remaining, log


def undo_moves(log: str | os.PathLike[str]) -> int:
    """Move back every file of the undo ``log`` that is still where it was moved; the number moved back."""
    try:
        record = json.loads(Path(log).read_text(encoding="utf-8"))
        moves = record["moves"] if record.get("tlstudio_moves") == LOG_VERSION else None
    except (OSError, ValueError, KeyError, AttributeError) as error:
        raise DataError(f"{str(log)!r} is not a readable TL Studio undo log: {error}.") from None
    if not isinstance(moves, list):
        raise DataError(f"{str(log)!r} is not a TL Studio undo log (no 'tlstudio_moves' version {LOG_VERSION}).")
    undone = 0
    for move in reversed(moves):
        if os.path.isfile(move["to"]) and not os.path.exists(move["from"]):
            os.makedirs(os.path.dirname(move["from"]), exist_ok=True)
            shutil.move(move["to"], move["from"])
            undone += 1
    return undone


def _free_name(path: Path, taken: set[Path]) -> Path:
    candidate, number = path, 0
    while candidate.exists() or candidate in taken:
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def _write_json(path: Path, value: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
