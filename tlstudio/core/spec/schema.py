"""The project file's schema: every key, its type and its sane range, checked before anything is built.

A project file is edited by hand as often as by the app, so it is read as
untrusted data. :func:`project_problems` walks the raw JSON and returns every
problem it finds, one line each, naming the field (``training.epochs: expected
a whole number, received 2.5``), so a user fixes them all in one go. Range
rules that depend on several fields stay in the recipe's dataclasses.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

from tlstudio.core.spec.hidden_units import MAX_UNITS

VERSION_KEY = "tlstudio_project"


@dataclass(frozen=True)
class Field:
    """One setting: its kind and, for numbers, the inclusive bounds a sane value lies in."""

    kind: str  # "str", "int", "float", "bool", "str?" (string or null), "[str]", "[int]"
    low: float | None = None
    high: float | None = None


SECTIONS: dict[str, dict[str, Field]] = {
    "data": {
        "folders": Field("[str]"),
        "val_fraction": Field("float", 0.0, 1.0),
        "seed": Field("int", 0, 2**32 - 1),
        "excluded_classes": Field("[str]"),
        "excluded_files": Field("[str]"),
        "relabels": Field("[[str]]"),
    },
    "base": {
        "name": Field("str"),
        "weights": Field("str"),
        "include_top": Field("bool"),
        "input_size": Field("int", 16, 1024),
        "model_file": Field("str?"),
    },
    "head": {
        "pooling": Field("str"),
        "hidden_units": Field("[int]", 1, MAX_UNITS),
        "dropout": Field("float", 0.0, 1.0),
        "batch_norm": Field("bool"),
        "bn_epsilon": Field("float", 0.0, 1.0),
        "bn_momentum": Field("float", 0.0, 1.0),
    },
    "training": {
        "epochs": Field("int", 1, 100_000),
        "batch_size": Field("int", 1, 65_536),
        "learning_rate": Field("float", 0.0, 10.0),
        "optimizer": Field("str"),
        "momentum": Field("float", 0.0, 1.0),
        "cosine_decay": Field("bool"),
        "early_stopping_patience": Field("int", 0, 100_000),
        "class_weights": Field("bool"),
        "augmentation": Field("bool"),
        "fine_tune_epochs": Field("int", 0, 100_000),
        "fine_tune_layers": Field("int", 1, 100_000),
        "fine_tune_from": Field("str?"),
        "fine_tune_lr_factor": Field("float", 0.0, 1.0),
        "finalize_batch_norm": Field("bool"),
    },
}
TOP_LEVEL: dict[str, Field] = {"cut_tensor": Field("str?")}

_KIND_WORDS = {
    "str": "a string",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "str?": "a string or null",
    "[str]": "a list of strings",
    "[int]": "a list of whole numbers",
    "[[str]]": "a list of lists of strings",
}


def project_problems(raw: Any) -> list[str]:
    """Every way ``raw`` (parsed JSON) breaks the schema, one line each naming the field; empty when none.

    The version field is checked by the caller, which knows the format it reads.
    """
    if not isinstance(raw, dict):
        return [f"the project must be a JSON object; received {_describe(raw)}"]
    problems = []
    known = {VERSION_KEY, *SECTIONS, *TOP_LEVEL}
    for key in sorted(set(raw) - known, key=str):
        problems.append(f"{key}: unknown key{_did_you_mean(key, known)}; expected one of {', '.join(sorted(known))}")
    for key, spec in TOP_LEVEL.items():
        if key in raw:
            problems.extend(_field_problems(key, spec, raw[key]))
    for section, fields in SECTIONS.items():
        if section not in raw:
            continue
        values = raw[section]
        if not isinstance(values, dict):
            problems.append(f"{section}: expected an object of settings; received {_describe(values)}")
            continue
        for key in sorted(set(values) - set(fields), key=str):
            problems.append(f"{section}.{key}: unknown setting{_did_you_mean(key, fields)}; "
                            f"known settings: {', '.join(sorted(fields))}")
        for key, spec in fields.items():
            if key in values:
                problems.extend(_field_problems(f"{section}.{key}", spec, values[key]))
    return problems


def _field_problems(name: str, spec: Field, value: Any) -> list[str]:
    """The problems of one value against its field (an empty list when it fits)."""
    if spec.kind.startswith("["):
        element = spec.kind[1:-1]
        if not isinstance(value, list):
            hint = " (put it in brackets: [\"...\"])" if isinstance(value, str) else ""
            return [f"{name}: expected {_KIND_WORDS[spec.kind]}{hint}; received {_describe(value)}"]
        problems = []
        for index, item in enumerate(value):
            problems.extend(_field_problems(f"{name}[{index}]", Field(element, spec.low, spec.high), item))
        return problems
    if spec.kind == "str?" and value is None:
        return []
    if not _is_kind(spec.kind.rstrip("?"), value):
        return [f"{name}: expected {_KIND_WORDS[spec.kind]}; received {_describe(value)}"]
    if spec.kind in ("int", "float"):
        if isinstance(value, float) and not math.isfinite(value):
            return [f"{name}: expected a finite number; received {value!r}"]
        if (spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high):
            return [f"{name}: expected a value from {spec.low:g} to {spec.high:g}; received {value!r}"]
    if spec.kind.startswith("str") and "\0" in value:
        return [f"{name}: expected a string without NUL characters; received {value!r}"]
    return []


def _is_kind(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def _did_you_mean(key: Any, names: Any) -> str:
    close = difflib.get_close_matches(str(key), sorted(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _describe(value: Any) -> str:
    """A short description of a received value: its JSON type and a clipped rendering."""
    kinds = {dict: "an object", list: "a list", str: "the string", bool: "", int: "", float: "", type(None): ""}
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    word = kinds.get(type(value), type(value).__name__)
    return f"{word} {text}".strip()
