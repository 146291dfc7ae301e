"""What the command modules share: exit codes, base-model arguments, tables, JSON and the quiet TensorFlow import."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from tlstudio.core.spec.bases import NAMED_BASES
from tlstudio.core.spec.errors import DataError, ModelFileError


class UsageError(Exception):
    """A command line that does not parse; reported like a user error."""


PROG = "tlstudio"


EXIT_OK = 0


EXIT_FAILED = 1


EXIT_USER_ERROR = 2


EXIT_CANCELLED = 130


MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so every
    mistake ends in the same single ``tlstudio: error:`` line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def status_actions(
    sub: argparse.ArgumentParser,
    common: argparse.ArgumentParser,
    status_help: str,
    handler: Any,
) -> Any:
    """Give ``sub`` actions with ``status`` the default (``handler``); ``--json`` works before or after
    ``status``. Returns the actions, for the command to add its others."""
    sub.add_argument("--json", action="store_true", help="print the status as JSON")
    actions = sub.add_subparsers(title="actions", metavar="ACTION", parser_class=Parser)
    status = actions.add_parser("status", parents=[common], help=status_help)
    status.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the status as JSON",
    )
    status.set_defaults(handler=handler)
    sub.set_defaults(handler=handler)
    return actions


BASE_HELP = f"{', '.join(NAMED_BASES)}, or the path of a .keras/.h5 model file"


def base_fields(base: str) -> dict[str, Any]:
    """BaseSpec fields for a BASE argument: a named network or a model file."""
    if base.lower() in NAMED_BASES:
        return {"name": base.lower(), "model_file": None}
    path = Path(base)
    if path.is_file():
        return {"name": "file", "model_file": str(path.resolve())}
    if path.suffix.lower() in MODEL_SUFFIXES or os.sep in base:
        raise ModelFileError(
            f"No model file at {base!r}. Check the path. Received: base={base!r}"
        )
    raise UsageError(
        f"unknown base model {base!r}; expected {', '.join(NAMED_BASES)} or the path of a .keras/.h5 model file"
    )


def base_spec(args: argparse.Namespace) -> Any:
    """The BaseSpec of a command's BASE, --weights, --top and --input-size arguments."""
    from tlstudio.core.spec.recipe import BaseSpec

    return BaseSpec(
        **base_fields(args.base),
        weights=weights_choice(args.weights),
        include_top=args.top,
        input_size=args.input_size or 224,
    )


def base_text(spec: Any) -> str:
    """A base model as the user named it: ``vgg16``, or the model file's name."""
    return (
        Path(spec.model_file).name
        if spec.name == "file" and spec.model_file
        else spec.name
    )


def weights_choice(weights: str) -> str:
    """``imagenet``, ``none`` or the absolute path of an existing weights file."""
    if weights.lower() in ("imagenet", "none"):
        return weights.lower()
    path = Path(weights)
    if not path.is_file():
        raise UsageError(
            f"--weights must be imagenet, none or an existing weights file; no file at {weights!r}"
        )
    return str(path.resolve())


def existing_folders(folders: Sequence[str], what: str) -> list[str]:
    """Check folders exist before anything slow happens."""
    for folder in folders:
        path = Path(folder)
        if not path.exists():
            raise DataError(
                f"The {what} folder {folder!r} does not exist. Check the path. Received: {folder!r}"
            )
        if not path.is_dir():
            raise DataError(
                f"The {what} folder {folder!r} is a file, not a folder. Received: {folder!r}"
            )
    return [str(folder) for folder in folders]


def split_arguments(group: Any, defaults: bool) -> None:
    """``--val-fraction`` and ``--seed`` of the validation split. Without ``defaults`` they are None
    when not given, so a project file's values stand."""
    group.add_argument(
        "--val-fraction",
        type=float,
        default=0.2 if defaults else None,
        metavar="F",
        help="validation share (default 0.2)",
    )
    group.add_argument(
        "--seed",
        type=int,
        default=0 if defaults else None,
        metavar="N",
        help="seed of the validation split (default 0)",
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a positive whole number, got {text!r}"
        )
    return value


def hidden_units(text: str) -> tuple[int, ...]:
    """``--hidden`` read as the app reads its field: ``"256,128"`` and ``"256 128"`` are two layers."""
    from tlstudio.core.spec.errors import RecipeError
    from tlstudio.core.spec.hidden_units import parse_hidden_units

    try:
        return parse_hidden_units(text)
    except RecipeError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def field_text(size: int | None, jump: int | None) -> str:
    """``40 (jump 4)``; a tensor without spatial axes sees the whole input."""
    if size is None:
        return "-"
    return f"{size} (jump {jump})" if jump is not None else f"{size} (whole input)"


def metric_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    numeric: set[int] | None = None,
) -> None:
    """A plain aligned table on stdout; ``numeric`` columns are right-aligned."""
    numeric = numeric or set()
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def render(row: list[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(parts).rstrip()

    print(render(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(render(row))


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=json_default))


def json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_error(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {' '.join(message.split())}\n")


def load_tensorflow(args: argparse.Namespace) -> None:
    """Import TensorFlow and Keras with their start-up chatter hidden.

    TensorFlow 2.21 logs through absl before its log level is read, so
    ``TF_CPP_MIN_LOG_LEVEL`` cannot silence lines like "oneDNN custom operations
    are on" or a failed ``cuInit`` on machines without a GPU; they would break
    up the progress output. File descriptor 2 is pointed at a temporary file
    for the import and the first look for GPUs; if that fails, what was
    captured is written out before the error. ``--debug`` shows it all.
    """
    if "tensorflow" in sys.modules or args.debug:
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        saved = None
    with tempfile.TemporaryFile() as capture:
        if saved is not None:
            os.dup2(capture.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
        except BaseException:
            restore_stderr(saved)
            saved = None
            capture.seek(0)
            sys.stderr.write(capture.read().decode("utf-8", errors="replace"))
            raise
        finally:
            restore_stderr(saved)


def restore_stderr(saved: int | None) -> None:
    if saved is not None:
        os.dup2(saved, 2)
        os.close(saved)
