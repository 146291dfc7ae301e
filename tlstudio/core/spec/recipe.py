"""Every choice a user makes, as frozen dataclasses, and the project file.

A recipe is what the GUI edits, what the CLI builds from its flags and what a
run records. It is saved as a versioned, human-editable JSON project file; the
app and the CLI read and write the same format.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlstudio.core.spec import schema
from tlstudio.core.spec.atomic import write_atomic
from tlstudio.core.spec.bases import BASE_NAMES, base_info
from tlstudio.core.spec.errors import RecipeError
from tlstudio.core.spec.text import counted

PROJECT_VERSION = 1
POOLINGS = ("avg", "flatten")
OPTIMIZERS = ("adam", "sgd")


def _whole(value: Any) -> int:
    """``value`` as an int when it is a whole number (a bool or 2.5 is not); ValueError otherwise."""
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(value)
    return int(value)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RecipeError(message)


@dataclass(frozen=True)
class DataSpec:
    """Where the images are and how they are split.

    ``folders``: one root with class sub-folders, one root with ``train/`` and
    ``val/`` (optional ``test/``), or several folders that are each one class.
    ``excluded_files`` (image paths) and ``relabels`` (``(path, class name)``
    pairs) are corrections from the data health check: the scan leaves those
    images out or gives them another class, and the user's files stay as they are.
    """

    folders: tuple[str, ...] = ()
    val_fraction: float = 0.2
    seed: int = 0
    excluded_classes: tuple[str, ...] = ()
    excluded_files: tuple[str, ...] = ()
    relabels: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _require(
            not isinstance(self.folders, (str, bytes)),
            f"folders must be a list of folder paths, not one string. Received: folders={self.folders!r}",
        )
        object.__setattr__(self, "folders", tuple(str(f) for f in self.folders))
        object.__setattr__(self, "excluded_classes", tuple(self.excluded_classes))
        _require(
            all(isinstance(f, str) and f for f in self.excluded_files),
            f"Excluded files must be image paths. Received: excluded_files={self.excluded_files!r}",
        )
        object.__setattr__(self, "excluded_files", tuple(dict.fromkeys(self.excluded_files)))
        _require(
            all(
                isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(v, str) and v for v in pair)
                for pair in self.relabels
            ),
            "Relabels must be [image path, class name] pairs, e.g. [[\"cats/7.jpg\", \"dogs\"]]. "
            f"Received: relabels={self.relabels!r}",
        )
        object.__setattr__(self, "relabels", tuple(dict((p, c) for p, c in self.relabels).items()))
        _require(
            0.0 < self.val_fraction < 1.0,
            f"The validation fraction must be between 0 and 1 (exclusive), e.g. 0.2. "
            f"Received: val_fraction={self.val_fraction!r}",
        )


@dataclass(frozen=True)
class BaseSpec:
    """The base model: which network, which weights, which input size.

    ``name`` is ``vgg16``, ``vgg19``, ``efficientnet-lite0`` or ``file`` (then
    ``model_file`` is the user's ``.keras``/``.h5``). ``weights`` is
    ``imagenet``, ``none`` (random initialisation) or a path to a weights file.
    """

    name: str = "vgg16"
    weights: str = "imagenet"
    include_top: bool = False
    input_size: int = 224
    model_file: str | None = None

    def __post_init__(self) -> None:
        _require(
            self.name in BASE_NAMES,
            f"Unknown base model. Expected one of {', '.join(BASE_NAMES)}. "
            f"Received: base={self.name!r}",
        )
        _require(
            self.name != "file" or bool(self.model_file),
            "A base model of kind 'file' needs model_file, the path of a .keras or .h5 file.",
        )
        _require(
            16 <= self.input_size <= 1024,
            f"The input size must be between 16 and 1024 pixels. Received: input_size={self.input_size!r}",
        )
        _require(
            not (self.include_top and base_info(self.name).top_input not in (None, self.input_size)),
            f"{base_info(self.name).label} with its fully-connected top only accepts "
            f"{base_info(self.name).top_input}x{base_info(self.name).top_input} inputs. "
            f"Use input_size={base_info(self.name).top_input} or include_top=False. "
            f"Received: input_size={self.input_size!r}",
        )


@dataclass(frozen=True)
class HeadSpec:
    """The new classifier on the cut tensor.

    With ``batch_norm`` on, pooled features are batch-normalised and each hidden
    layer is ``Dense(use_bias=False) -> BatchNormalization -> activation``: a
    layer followed by batch norm needs no bias, the norm's shift replaces it.
    """

    pooling: str = "avg"
    hidden_units: tuple[int, ...] = ()
    dropout: float = 0.0
    batch_norm: bool = True
    bn_epsilon: float = 1e-3
    bn_momentum: float = 0.99

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "hidden_units", tuple(_whole(u) for u in self.hidden_units))
        except (TypeError, ValueError):
            raise RecipeError(
                f"Hidden layer sizes must be whole numbers, e.g. [256, 128]. Received: hidden_units={self.hidden_units!r}"
            ) from None
        _require(
            self.pooling in POOLINGS,
            f"Pooling must be one of {', '.join(POOLINGS)}. Received: pooling={self.pooling!r}",
        )
        _require(
            all(u > 0 for u in self.hidden_units),
            f"Hidden layer sizes must be positive. Received: hidden_units={self.hidden_units!r}",
        )
        _require(
            0.0 <= self.dropout < 1.0,
            f"Dropout must be in [0, 1). Received: dropout={self.dropout!r}",
        )
        _require(
            self.bn_epsilon > 0,
            f"Batch-norm epsilon must be positive (default 1e-3). Received: bn_epsilon={self.bn_epsilon!r}",
        )
        _require(
            0.0 < self.bn_momentum < 1.0,
            f"Batch-norm momentum must be in (0, 1), default 0.99. Received: bn_momentum={self.bn_momentum!r}",
        )


@dataclass(frozen=True)
class TrainSpec:
    """Training settings for the head (phase 1) and optional fine-tuning (phase 2).

    Fine-tuning unfreezes the last ``fine_tune_layers`` weighted layers of the
    base, or every layer from ``fine_tune_from`` on, and trains them at
    ``learning_rate * fine_tune_lr_factor``.
    """

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    cosine_decay: bool = False
    early_stopping_patience: int = 3
    class_weights: bool = True
    augmentation: bool = False
    fine_tune_epochs: int = 0
    fine_tune_layers: int = 4
    fine_tune_from: str | None = None
    fine_tune_lr_factor: float = 0.1
    finalize_batch_norm: bool = False

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"Epochs must be at least 1. Received: epochs={self.epochs!r}")
        _require(
            self.batch_size >= 1,
            f"Batch size must be at least 1. Received: batch_size={self.batch_size!r}",
        )
        _require(
            0.0 < self.learning_rate <= 10.0,
            f"The learning rate must be positive, typically 1e-4 to 1e-2. "
            f"Received: learning_rate={self.learning_rate!r}",
        )
        _require(
            self.optimizer in OPTIMIZERS,
            f"Optimizer must be one of {', '.join(OPTIMIZERS)}. Received: optimizer={self.optimizer!r}",
        )
        _require(
            0.0 <= self.momentum < 1.0,
            f"Momentum must be in [0, 1). Received: momentum={self.momentum!r}",
        )
        _require(
            self.early_stopping_patience >= 0,
            "Early-stopping patience must be 0 (off) or more epochs. "
            f"Received: early_stopping_patience={self.early_stopping_patience!r}",
        )
        _require(
            self.fine_tune_epochs >= 0,
            f"Fine-tune epochs must be 0 (off) or more. Received: fine_tune_epochs={self.fine_tune_epochs!r}",
        )
        _require(
            self.fine_tune_layers >= 1,
            f"Fine-tune layers must be at least 1. Received: fine_tune_layers={self.fine_tune_layers!r}",
        )
        _require(
            0.0 < self.fine_tune_lr_factor <= 1.0,
            "The fine-tuning learning-rate factor must be in (0, 1], default 0.1. "
            f"Received: fine_tune_lr_factor={self.fine_tune_lr_factor!r}",
        )


@dataclass(frozen=True)
class Recipe:
    """All of a user's choices. ``cut_tensor`` None means the default cut
    (the second-to-last layer's output)."""

    data: DataSpec = field(default_factory=DataSpec)
    base: BaseSpec = field(default_factory=BaseSpec)
    cut_tensor: str | None = None
    head: HeadSpec = field(default_factory=HeadSpec)
    training: TrainSpec = field(default_factory=TrainSpec)

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The project-file form: plain JSON types, with the format version."""
        body = dataclasses.asdict(self)
        return {"tlstudio_project": PROJECT_VERSION, **_lists(body)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "project") -> "Recipe":
        """Build a recipe from the project-file form, checked against :mod:`schema` first.

        Every problem found is reported, one line each naming the field.
        """
        if not isinstance(raw, dict):
            raise RecipeError(f"{source} must hold a JSON object with a 'tlstudio_project' version field.")
        version = raw.get(schema.VERSION_KEY)
        if version is None:
            raise RecipeError(
                f"{source} is not a TL Studio project file: it has no 'tlstudio_project' version field."
            )
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RecipeError(f"{source}: tlstudio_project: expected a format number such as 1; received {version!r}")
        if version > PROJECT_VERSION:
            raise RecipeError(
                f"{source} was written by a newer TL Studio (project format {version!r}; this version "
                f"reads up to {PROJECT_VERSION}). Update TL Studio to open it."
            )
        problems = schema.project_problems(raw)
        kwargs: dict[str, Any] = {"cut_tensor": raw.get("cut_tensor")}
        sections = {"data": DataSpec, "base": BaseSpec, "head": HeadSpec, "training": TrainSpec}
        for key, spec_type in sections.items():
            if problems:
                break
            try:
                kwargs[key] = spec_type(**{k: _tuples(v) for k, v in raw.get(key, {}).items()})
            except RecipeError as error:
                problems.append(f"{key}: {error}")
        if problems:
            listed = "\n".join(f"  {problem}" for problem in problems)
            raise RecipeError(f"{source} has {counted(len(problems), 'problem')}; fix them in a text editor:\n{listed}")
        return cls(**kwargs)


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def save_project(recipe: Recipe, path: str | os.PathLike[str]) -> Path:
    """Write the project file atomically (temporary file, then rename)."""
    target = Path(path)
    data = (json.dumps(recipe.to_dict(), indent=2) + "\n").encode("utf-8", "surrogateescape")
    try:
        write_atomic(target, data)
    except OSError as error:
        hint = "the disk is full; free some space or save elsewhere" if error.errno in (errno.ENOSPC, errno.EDQUOT) \
            else "choose a folder you can write to, with free space"
        raise RecipeError(
            f"Cannot save the project to {str(target)!r}: {error.strerror or error} ({hint}). "
            "The project is still open; nothing was changed on disk."
        ) from None
    return target


def load_project(path: str | os.PathLike[str]) -> Recipe:
    """Read a project file written by the app, the CLI or by hand."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"No project file at {str(source)!r}. Check the path.") from None
    except OSError as error:
        raise RecipeError(f"Cannot read the project file {str(source)!r}: {error.strerror or error}.") from None
    except UnicodeDecodeError as error:
        raise RecipeError(
            f"The project file {str(source)!r} is not text (byte {error.start} is not UTF-8). "
            "Choose the .json project file TL Studio saved."
        ) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise RecipeError(
            f"The project file {str(source)!r} is not valid JSON (line {error.lineno}, column {error.colno}: "
            f"{error.msg}). Fix it in a text editor or save the project again from TL Studio."
        ) from None
    if not isinstance(raw, dict):
        raise RecipeError(f"The project file {str(source)!r} must hold a JSON object.")
    return Recipe.from_dict(raw, source=repr(str(source)))
