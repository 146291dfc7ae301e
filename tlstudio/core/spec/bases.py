"""The base-model registry: every base TL Studio knows, and the facts about it, in one place.

The recipe validates names against it, the CLI lists its bases from it, the
app fills its base-model menu from it, :mod:`tlstudio.core.model.backbones`
picks the builder, the weights and the preprocessing from it, and the
README's table is :func:`markdown_table`. Adding a base model starts here.

It lives in ``spec`` (not ``model``) because the recipe, at the bottom of
the engine's layers, must know the names; it holds plain facts and imports
neither TensorFlow nor Keras.
"""

from __future__ import annotations

from dataclasses import dataclass

from tlstudio.core.spec.errors import RecipeError


@dataclass(frozen=True)
class BaseModelInfo:
    """One base model.

    ``name`` is the recipe's and the CLI's name; ``keras_name`` the name the
    built model carries. ``builder`` says which builder of ``backbones`` makes
    it (``vgg``, ``lite``, ``file``). ``weights`` is where ImageNet weights come
    from (``download``, ``bundled``, ``file``); ``preprocessing`` the
    ``Preprocess`` mode its inputs need. ``default_cut`` is the cut tensor
    when the user chooses none (``default_cut_with_top`` with the
    fully-connected top); None: read from the model. ``min_input`` is the
    smallest input side; ``top_input`` the only side the top accepts (None: no
    top is offered).
    """

    name: str
    label: str
    keras_name: str
    builder: str
    weights: str
    preprocessing: str
    default_cut: str | None
    default_cut_with_top: str | None
    min_input: int
    top_input: int | None
    pretrained_on: str
    input_text: str
    weights_text: str

    @property
    def has_top_choice(self) -> bool:
        """Whether the base can keep its fully-connected top."""
        return self.top_input is not None


_VGG = dict(
    builder="vgg", weights="download", preprocessing="caffe", default_cut="block5_pool:0",
    default_cut_with_top="fc2:0", min_input=32, top_input=224, pretrained_on="ImageNet",
    input_text="224×224 with the top; any size ≥ 32 without", weights_text="official Keras files (below)",
)

BASE_MODELS: tuple[BaseModelInfo, ...] = (
    BaseModelInfo(name="vgg16", label="VGG16", keras_name="vgg16", **_VGG),
    BaseModelInfo(name="vgg19", label="VGG19", keras_name="vgg19", **_VGG),
    BaseModelInfo(
        name="efficientnet-lite0", label="EfficientNet-Lite0", keras_name="efficientnet_lite0", builder="lite",
        weights="bundled", preprocessing="lite", default_cut="top_activation:0", default_cut_with_top=None,
        min_input=32, top_input=None, pretrained_on="ImageNet", input_text="224×224 (any size works)",
        weights_text="bundled, works offline",
    ),
    BaseModelInfo(
        name="file", label="a `.keras` / `.h5` file", keras_name="", builder="file", weights="file",
        preprocessing="none", default_cut=None, default_cut_with_top=None, min_input=1, top_input=None,
        pretrained_on="yours", input_text="the file's", weights_text="the file",
    ),
)

_BY_NAME = {info.name: info for info in BASE_MODELS}
BASE_NAMES: tuple[str, ...] = tuple(_BY_NAME)
"""Every recipe base name, ``file`` (the user's model file) last."""
NAMED_BASES: tuple[str, ...] = tuple(info.name for info in BASE_MODELS if info.builder != "file")
"""The bases built in to TL Studio, by name."""
DOWNLOADABLE_BASES: tuple[str, ...] = tuple(info.name for info in BASE_MODELS if info.weights == "download")
"""The bases whose ImageNet weights are downloaded (the official Keras files)."""


def base_info(name: str) -> BaseModelInfo:
    """The registry entry of a recipe base name; RecipeError naming the known ones otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise RecipeError(
            f"Unknown base model. Expected one of {', '.join(BASE_NAMES)}. Received: base={name!r}"
        ) from None


def base_for_keras_name(keras_name: str) -> BaseModelInfo | None:
    """The built-in base whose built model carries ``keras_name`` (``vgg16``, ``efficientnet_lite0``)."""
    return next((info for info in BASE_MODELS if info.keras_name and info.keras_name == keras_name), None)


def menu_choices() -> tuple[tuple[str, str, bool], ...]:
    """``(label, name, include_top)`` for the app's base-model menu: each base, with and without its top."""
    choices: list[tuple[str, str, bool]] = []
    for info in BASE_MODELS:
        if info.builder == "file":
            choices.append(("Open model file…", info.name, False))
            continue
        label = info.label + (" (offline)" if info.weights == "bundled" else "")
        choices.append((label, info.name, False))
        if info.has_top_choice:
            choices.append((f"{info.label} with fc1, fc2", info.name, True))
    return tuple(choices)


def markdown_table() -> str:
    """The README's table of base models."""
    rows = ["| base | pretrained on | input | where the weights come from |", "| --- | --- | --- | --- |"]
    for info in BASE_MODELS:
        name = info.label if info.builder == "file" else f"`{info.name}`"
        rows.append(f"| {name} | {info.pretrained_on} | {info.input_text} | {info.weights_text} |")
    return "\n".join(rows)
