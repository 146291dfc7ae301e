"""Building the base models of the registry (:mod:`tlstudio.core.spec.bases`): VGG16, VGG19,
EfficientNet-Lite0 and the user's own model files.

Also where ImageNet weights come from. VGG weights are the official Keras
files, looked for in this order:

1. Keras' own cache (``~/.keras/models`` or ``$KERAS_HOME/models``), md5-checked;
2. a local ``.h5`` the user picked, md5-checked, then copied into that cache;
3. a mirror URL (the ``mirror`` argument or ``TLSTUDIO_WEIGHTS_MIRROR``);
4. the official URL.

EfficientNet-Lite0's weights ship inside a Python package, so it works offline.
This module imports TensorFlow only inside the functions that build models.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import socket
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tlstudio.core.spec import paths
from tlstudio.core.spec.bases import DOWNLOADABLE_BASES, base_info
from tlstudio.core.model.lite0_weights import bundled_weights_path
from tlstudio.core.model.model_files import check_keras_version, check_model_file
from tlstudio.core.spec.errors import Cancelled, ModelFileError, RecipeError, WeightsError
from tlstudio.core.spec.events import Message, OnEvent, Progress, ShouldStop, ignore_event, never_stop
from tlstudio.core.spec.recipe import BaseSpec

if TYPE_CHECKING:
    import keras

MIRROR_ENV = "TLSTUDIO_WEIGHTS_MIRROR"
CHUNK_BYTES = 256 * 1024
VGG_BASES = DOWNLOADABLE_BASES


@dataclass(frozen=True)
class WeightsFile:
    """One downloadable weights file: where it lives and how to recognise it."""

    base: str
    include_top: bool
    filename: str
    url: str
    md5: str
    size_bytes: int

    @property
    def size_text(self) -> str:
        """The size for people, e.g. ``58.9 MB``."""
        return f"{self.size_bytes / 1e6:.1f} MB"


_KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications"

# URLs and md5 hashes as in keras/src/applications/vgg16.py and vgg19.py;
# sizes are the byte counts Keras reports while downloading them.
OFFICIAL_WEIGHTS: dict[tuple[str, bool], WeightsFile] = {
    (wf.base, wf.include_top): wf
    for wf in (
        WeightsFile(
            "vgg16", True, "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
            f"{_KERAS_URL}/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
            "64373286793e3c8b2b4e3219cbf3544b", 553_467_096,
        ),
        WeightsFile(
            "vgg16", False, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            f"{_KERAS_URL}/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "6d6bbae143d832006294945121d1f1fc", 58_889_256,
        ),
        WeightsFile(
            "vgg19", True, "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
            f"{_KERAS_URL}/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5",
            "cbe5617147190e668d6c5d5026f83318", 574_710_816,
        ),
        WeightsFile(
            "vgg19", False, "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
            f"{_KERAS_URL}/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "253f8cb515780f3b799900260a226db6", 80_134_624,
        ),
    )
}


def weights_file(base: str, include_top: bool) -> WeightsFile:
    """The official ImageNet weights file for a VGG base, with or without its top."""
    try:
        return OFFICIAL_WEIGHTS[(base, bool(include_top))]
    except KeyError:
        note = " (its weights ship with TL Studio; nothing to download)" if _weights_kind(base) == "bundled" else ""
        raise WeightsError(
            f"There is no downloadable weights file for base model {base!r}{note}. "
            f"Downloadable: {', '.join(VGG_BASES)}. Received: base={base!r}"
        ) from None


def weights_status(base: str, include_top: bool) -> tuple[str, Path | None]:
    """``("cached", path)``, ``("bundled", path)`` for Lite0, or ``("missing", None)``.

    This is a quick look (the file exists with the right size); the md5 is
    checked when the weights are resolved for use.
    """
    if _weights_kind(base) == "bundled":
        bundled = bundled_weights_path()
        return ("bundled", bundled) if bundled else ("missing", None)
    wf = weights_file(base, include_top)
    cached = paths.keras_models_dir() / wf.filename
    try:
        if cached.stat().st_size == wf.size_bytes:
            return "cached", cached
    except OSError:
        pass
    return "missing", None


def file_md5(path: Path, should_stop: ShouldStop = never_stop) -> str:
    """The md5 hex digest of a file, read in chunks."""
    digest = hashlib.md5()
    with path.open("rb") as file:
        while chunk := file.read(4 * 1024 * 1024):
            if should_stop():
                raise Cancelled()
            digest.update(chunk)
    return digest.hexdigest()


def _ways_to_provide(wf: WeightsFile) -> str:
    return (
        f"To provide it: download {wf.url} on a machine with internet access and run "
        f"`tlstudio weights import FILE`; or set {MIRROR_ENV} to a server that holds {wf.filename}; "
        f"or copy the file to {str(paths.keras_models_dir() / wf.filename)!r}."
    )


def _cache_write_error(wf: WeightsFile, directory: Path, error: OSError) -> WeightsError:
    if error.errno == errno.ENOSPC:
        what = f"the disk is full ({wf.filename} needs {wf.size_text} free)"
    else:
        what = error.strerror or str(error)
    return WeightsError(
        f"Cannot save {wf.filename} into the weights cache {str(directory)!r}: {what}. "
        "Free some space, make the folder writable, or set KERAS_HOME to a writable folder."
    )


def _copy_into_cache(source: Path, wf: WeightsFile, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise _cache_write_error(wf, target.parent, error) from None


class _FetchFailed(Exception):
    """One URL did not give the right file; the next one may."""


def _download(
    url: str, wf: WeightsFile, target: Path, on_event: OnEvent, should_stop: ShouldStop, timeout: float
) -> None:
    """Fetch ``url`` to a temporary file beside ``target``, check its md5, then rename.

    Raises WeightsError for write problems (not worth trying another URL),
    ``_FetchFailed`` for network or hash problems (worth trying the next URL).
    """
    if should_stop():
        raise Cancelled()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _cache_write_error(wf, target.parent, error) from None
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        raise _FetchFailed(f"{url} answered HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, socket.timeout, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise _FetchFailed(f"{url} could not be reached ({reason})") from None
    digest = hashlib.md5()
    done = 0
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else wf.size_bytes
        on_event(Progress("download", 0, total, wf.filename))
        try:
            file = temporary.open("wb")
        except OSError as error:
            raise _cache_write_error(wf, target.parent, error) from None
        try:
            with file:
                while True:
                    if should_stop():
                        raise Cancelled()
                    try:
                        chunk = response.read1(min(CHUNK_BYTES, wf.size_bytes - done + 1))
                    except (socket.timeout, OSError, http.client.HTTPException) as error:
                        raise _FetchFailed(
                            f"the transfer from {url} broke off after {done} of {wf.size_bytes} bytes ({error}); "
                            "try again, or download the file yourself"
                        ) from None
                    if not chunk:
                        break
                    if done + len(chunk) > wf.size_bytes:
                        raise _FetchFailed(
                            f"{url} sent more than the expected {wf.size_bytes} bytes; the download was stopped "
                            "(the server holds a different file)"
                        )
                    try:
                        file.write(chunk)
                    except OSError as error:
                        raise _cache_write_error(wf, target.parent, error) from None
                    digest.update(chunk)
                    done += len(chunk)
                    on_event(Progress("download", done, total, wf.filename))
                file.flush()
                os.fsync(file.fileno())
            if done != wf.size_bytes:
                raise _FetchFailed(
                    f"the transfer from {url} broke off: {done} of {wf.size_bytes} bytes arrived; "
                    "try again, or download the file yourself"
                )
            if digest.hexdigest() != wf.md5:
                raise _FetchFailed(
                    f"the file from {url} has md5 {digest.hexdigest()} ({done} bytes), expected {wf.md5} "
                    f"({wf.size_bytes} bytes): the download was corrupted or the server holds a different file"
                )
            os.replace(temporary, target)
        except OSError as error:
            raise _cache_write_error(wf, target.parent, error) from None
        finally:
            temporary.unlink(missing_ok=True)


def _mirror_url(mirror: str | None, wf: WeightsFile) -> str | None:
    base = mirror if mirror is not None else os.environ.get(MIRROR_ENV, "")
    base = base.strip()
    return f"{base.rstrip('/')}/{wf.filename}" if base else None


def resolve_weights(
    wf: WeightsFile,
    local_file: str | os.PathLike[str] | None = None,
    mirror: str | None = None,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
    timeout: float = 30.0,
) -> Path:
    """The path of a verified copy of ``wf``, fetching it if needed (see the module docstring).

    Emits ``Progress(task="download")`` while downloading; raises Cancelled when
    ``should_stop()`` turns true, WeightsError when no source gives the file.
    """
    cached = paths.keras_models_dir() / wf.filename
    if cached.is_file():
        actual = file_md5(cached, should_stop)
        if actual == wf.md5:
            return cached
        on_event(Message(
            f"The cached {wf.filename} is damaged (md5 {actual}, expected {wf.md5}); fetching it again.",
            "warning",
        ))
        try:
            cached.unlink()
        except OSError:
            pass
    if local_file is not None:
        return _use_local_file(Path(local_file), wf, cached, on_event, should_stop)
    attempts: list[str] = []
    for url in filter(None, (_mirror_url(mirror, wf), wf.url)):
        try:
            _download(url, wf, cached, on_event, should_stop, timeout)
            return cached
        except _FetchFailed as failure:
            attempts.append(str(failure))
    raise WeightsError(
        f"Cannot get the ImageNet weights file {wf.filename} ({wf.size_text}, {wf.size_bytes} bytes) "
        f"from {wf.url}: {'; then '.join(attempts)}. {_ways_to_provide(wf)}"
    )


def _use_local_file(source: Path, wf: WeightsFile, cached: Path, on_event: OnEvent, should_stop: ShouldStop) -> Path:
    if not source.is_file():
        raise WeightsError(
            f"The weights file {str(source)!r} does not exist. Expected a copy of {wf.filename} "
            f"({wf.size_text}) downloaded from {wf.url}."
        )
    actual = file_md5(source, should_stop)
    if actual != wf.md5:
        raise WeightsError(
            f"{str(source)!r} is not the expected weights file: expected {wf.filename} ({wf.size_bytes} bytes, "
            f"md5 {wf.md5}), got {source.stat().st_size} bytes with md5 {actual}. "
            f"Download the right file from {wf.url}."
        )
    try:
        _copy_into_cache(source, wf, cached)
    except WeightsError as error:
        on_event(Message(f"{error} Using {source} where it is.", "warning"))
        return source
    return cached


def import_weights(path: str | os.PathLike[str]) -> Path:
    """Recognise an official weights file by its md5 and copy it into the Keras cache."""
    source = Path(path)
    if not source.is_file():
        raise WeightsError(f"No file at {str(source)!r}. Give the path of a downloaded VGG weights .h5 file.")
    size = source.stat().st_size
    candidates = [wf for wf in OFFICIAL_WEIGHTS.values() if wf.size_bytes == size]
    actual = file_md5(source) if candidates else None
    for wf in candidates:
        if wf.md5 == actual:
            target = paths.keras_models_dir() / wf.filename
            _copy_into_cache(source, wf, target)
            return target
    known = "; ".join(f"{wf.filename} ({wf.size_bytes} bytes, md5 {wf.md5})" for wf in OFFICIAL_WEIGHTS.values())
    raise WeightsError(
        f"{str(source)!r} ({size} bytes{f', md5 {actual}' if actual else ''}) is none of the official "
        f"VGG weights files. Expected one of: {known}."
    )


def load_user_model(path: str | os.PathLike[str]) -> "keras.Model":
    """Load the user's own ``.keras`` or ``.h5`` model in Keras' safe mode.

    A model whose config holds a ``Lambda``, a ``TFSMLayer`` or an unknown
    custom object is refused before Keras reads it
    (:func:`~tlstudio.core.model.model_files.check_model_file`).
    """
    import keras

    source = Path(path)
    name = source.name.lower()
    if source.is_dir():
        raise ModelFileError(
            f"{str(source)!r} is a folder (a TensorFlow SavedModel?). TL Studio reads Keras model files: "
            "save your model with model.save('model.keras') and choose that file."
        )
    if not source.exists():
        raise ModelFileError(f"No model file at {str(source)!r}. Check the path.")
    if name.endswith(".weights.h5"):
        raise ModelFileError(
            f"{str(source)!r} holds only weights, not a model. Choose a file saved with "
            "model.save('model.keras'), which stores the layers too."
        )
    if not name.endswith((".keras", ".h5", ".hdf5")):
        raise ModelFileError(
            f"{str(source)!r} is not a Keras model file. Expected a .keras file (or a legacy .h5). "
            f"Received: a file ending in {source.suffix or 'no extension'!r}."
        )
    check_keras_version()
    check_model_file(source)
    try:
        model = keras.saving.load_model(source, safe_mode=True, compile=False)
    except Exception as error:
        raise _model_load_error(source, error) from None
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"{str(source)!r} holds a {type(model).__name__}, not a Keras model.")
    _check_image_input(model, source)
    return model


def _model_load_error(source: Path, error: Exception) -> ModelFileError:
    text = str(error)
    if "safe_mode" in text or "arbitrary code" in text:
        return ModelFileError(
            f"{str(source)!r} needs to run arbitrary code to load (it has a Lambda layer holding Python code), "
            "and TL Studio refuses it for safety. Rebuild the model without Lambda layers, or replace them "
            "with built-in layers (e.g. Rescaling), save it again and choose the new file."
        )
    if "Could not locate" in text or "Unknown layer" in text or "custom_objects" in text:
        return ModelFileError(
            f"{str(source)!r} uses a custom layer or function TL Studio does not know, so it cannot be "
            f"loaded. Rebuild the model from built-in Keras layers. Details: {text.splitlines()[0]}"
        )
    first_line = text.splitlines()[0] if text else type(error).__name__
    return ModelFileError(
        f"{str(source)!r} cannot be read as a Keras model (it may be damaged or not a model file): "
        f"{first_line}"
    )


def _check_image_input(model: "keras.Model", source: Path) -> None:
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ModelFileError(
            f"The model in {str(source)!r} has no defined input. Rebuild it starting from "
            "keras.Input(shape=(height, width, 3)) and save it again."
        )
    shape = tuple(inputs[0].shape)
    if len(inputs) != 1 or len(shape) != 4 or shape[-1] != 3:
        raise ModelFileError(
            f"The model in {str(source)!r} must take one batch of RGB images (None, height, width, 3). "
            f"Received: inputs of shape {[tuple(i.shape) for i in inputs]}."
        )


def _build_vgg(spec: BaseSpec, weights: str | None) -> "keras.Model":
    import keras

    constructor = {"vgg16": keras.applications.VGG16, "vgg19": keras.applications.VGG19}[spec.name]
    minimum = base_info(spec.name).min_input
    try:
        return constructor(
            include_top=spec.include_top, weights=weights, input_shape=(spec.input_size, spec.input_size, 3)
        )
    except ValueError as error:
        if spec.input_size < minimum:
            raise RecipeError(
                f"VGG needs inputs of at least {minimum}x{minimum} pixels. Received: input_size={spec.input_size!r}"
            ) from None
        if weights is not None:
            raise WeightsError(
                f"The weights file {weights!r} does not fit {spec.name} "
                f"({'with' if spec.include_top else 'without'} top): {str(error).splitlines()[0]}"
            ) from None
        raise


def _weights_path_argument(spec: BaseSpec) -> str:
    path = Path(spec.weights).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"The weights file {spec.weights!r} does not exist. Use weights 'imagenet', 'none', "
            "or the path of an existing weights file."
        )
    return str(path)


def build_base(spec: BaseSpec, on_event: OnEvent = ignore_event, should_stop: ShouldStop = never_stop) -> "keras.Model":
    """Build the base model a recipe asks for, with its weights in place.

    VGG: ``weights`` ``"imagenet"`` resolves the official file (possibly
    downloading it), ``"none"`` initialises randomly, anything else is a path to
    a Keras weights file. Lite0: bundled ImageNet weights, ``"none"`` or a
    ``.weights.h5`` path. ``"file"``: the user's own model, loaded safely.
    """
    builder = base_info(spec.name).builder
    if builder == "vgg":
        if spec.weights == "none":
            weights = None
        elif spec.weights == "imagenet":
            weights = str(resolve_weights(
                weights_file(spec.name, spec.include_top), on_event=on_event, should_stop=should_stop
            ))
        else:
            weights = _weights_path_argument(spec)
        if should_stop():
            raise Cancelled()
        return _build_vgg(spec, weights)
    if builder == "lite":
        from tlstudio.core.model.efficientnet_lite import build_efficientnet_lite0

        if spec.weights in ("imagenet", "none"):
            return build_efficientnet_lite0(spec.input_size, spec.include_top, spec.weights)
        path = _weights_path_argument(spec)
        model = build_efficientnet_lite0(spec.input_size, spec.include_top, "none")
        try:
            model.load_weights(path)
        except Exception as error:
            raise WeightsError(
                f"The weights file {path!r} does not fit EfficientNet-Lite0: {str(error).splitlines()[0]}"
            ) from None
        return model
    assert spec.model_file is not None
    return load_user_model(spec.model_file)


def preprocessing_mode(spec: BaseSpec) -> str:
    """The ``Preprocess`` mode a base expects: ``caffe`` (VGG), ``lite`` (Lite0), ``none`` (user files)."""
    return base_info(spec.name).preprocessing


def _weights_kind(base: str) -> str | None:
    try:
        return base_info(base).weights
    except RecipeError:
        return None
