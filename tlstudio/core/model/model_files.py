"""Model files are untrusted: read their config as data and refuse what could run code, before Keras sees them.

Keras' safe mode has had bypasses (CVE-2025-9905: a Lambda in a legacy .h5;
CVE-2025-9906 and CVE-2025-8747: config tricks; CVE-2026-1462: TFSMLayer
loading an outside SavedModel). So TL Studio needs a Keras with those fixes
(:data:`MIN_KERAS`, checked at start by :func:`check_keras_version`) and, on
top of it, opens a model file only after reading its config (``config.json``
from the ``.keras`` zip, the ``model_config`` attribute of an ``.h5``) and
finding nothing but built-in Keras objects and TL Studio's own layers. Nothing
in the file is built or called during that check.
"""

from __future__ import annotations

import json
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from tlstudio.core.spec.errors import ModelFileError, UserError

MIN_KERAS = (3, 14)
"""The oldest Keras with the safe-mode fixes listed in the module docstring."""
FORBIDDEN_CLASSES = {
    "Lambda": "a Lambda layer, which holds Python code",
    "TFSMLayer": "a TFSMLayer, which loads a TensorFlow SavedModel from outside the file",
    "__lambda__": "a serialised Python lambda",
}
TLSTUDIO_OBJECTS = {"tlstudio>Preprocess"}
"""Registered names of TL Studio's own layers, which a run's model.keras holds."""
_INNER_MARKERS = {"__keras_tensor__", "__tensor__", "__numpy__", "__tuple__", "__bytes__", "__ellipsis__",
                  "__slice__", "__typespec__"}
_BUILTIN_CONTAINERS = {"Functional", "Sequential", "Model"}
_MAX_CONFIG_BYTES = 64 * 2**20


class KerasVersionError(UserError):
    """The installed Keras is older than the one with the safe-mode fixes."""


def check_keras_version(installed: str | None = None) -> None:
    """Raise KerasVersionError when the installed Keras is older than :data:`MIN_KERAS`.

    Reads the package metadata, so it costs nothing at start-up. Where there is
    no metadata (a bundle may leave it out) it reads ``keras.__version__`` if
    Keras is already imported, and otherwise defers: reading a model file
    checks again, with Keras loaded.
    """
    if installed is None:
        try:
            installed = metadata.version("keras")
        except metadata.PackageNotFoundError:
            loaded = sys.modules.get("keras")
            if loaded is None or not isinstance(getattr(loaded, "__version__", None), str):
                return
            installed = loaded.__version__
    parts = []
    for piece in installed.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    if tuple(parts) < MIN_KERAS:
        wanted = ".".join(map(str, MIN_KERAS))
        raise KerasVersionError(
            f"TL Studio needs Keras {wanted} or newer (older versions can run code hidden in model files). "
            f"Received: keras {installed}. Upgrade it: pip install 'keras>={wanted}'."
        )


def check_model_file(source: Path) -> None:
    """Refuse ``source`` (a ``.keras`` or ``.h5`` model) when its config holds anything but built-in objects.

    Raises ModelFileError naming the first offending object and where it is.
    """
    config = read_model_config(source)
    for where, item in _objects(config, "model"):
        problem = _object_problem(item)
        if problem:
            raise ModelFileError(
                f"{str(source)!r} is refused for safety: its config holds {problem} (at {where}). "
                "TL Studio opens only models made of built-in Keras layers; rebuild it without that object "
                "(e.g. replace a Lambda by built-in layers such as Rescaling), save it again and choose the new file."
            )


def read_model_config(source: Path) -> Any:
    """The model's config as parsed JSON, read without building anything."""
    if source.suffix.lower() == ".keras":
        return _keras_zip_config(source)
    return _h5_config(source)


def _keras_zip_config(source: Path) -> Any:
    try:
        with zipfile.ZipFile(source) as archive:
            info = archive.getinfo("config.json")
            if info.file_size > _MAX_CONFIG_BYTES:
                raise ModelFileError(f"{str(source)!r} has a config of {info.file_size} bytes; refused as damaged or hostile.")
            text = archive.read(info)
    except KeyError:
        raise ModelFileError(f"{str(source)!r} is not a Keras model file: it has no config.json.") from None
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as error:
        raise ModelFileError(
            f"{str(source)!r} cannot be read as a .keras model (it may be damaged or not a model file): {error}"
        ) from None
    return _parse(text, source)


def _h5_config(source: Path) -> Any:
    import h5py

    try:
        with h5py.File(source, "r") as handle:
            raw = handle.attrs.get("model_config")
    except (OSError, ValueError) as error:
        raise ModelFileError(
            f"{str(source)!r} cannot be read as an .h5 model (it may be damaged or not a model file): {error}"
        ) from None
    if raw is None:
        raise ModelFileError(
            f"{str(source)!r} holds no model config (only weights?). Choose a file saved with model.save('model.keras')."
        )
    if isinstance(raw, bytes) and len(raw) > _MAX_CONFIG_BYTES:
        raise ModelFileError(f"{str(source)!r} has an oversized config; refused as damaged or hostile.")
    return _parse(raw, source)


def _parse(text: str | bytes, source: Path) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ModelFileError(f"{str(source)!r} has a config that is not valid JSON ({error}); it is damaged.") from None


def _objects(value: Any, where: str) -> Iterator[tuple[str, dict]]:
    """Every serialised object (a dict with ``class_name``) inside ``value``, with a path to it."""
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            if "class_name" in item:
                name = item.get("config", {}).get("name") if isinstance(item.get("config"), dict) else None
                path = f"{path} > {item.get('class_name')}" + (f" {name!r}" if isinstance(name, str) else "")
                yield path, item
            stack.extend((child, path) for key, child in item.items() if key != "class_name")
        elif isinstance(item, list):
            stack.extend((child, path) for child in item)


def _object_problem(item: dict) -> str | None:
    """What is wrong with one serialised object; None when it is a built-in Keras object."""
    class_name = item.get("class_name")
    if not isinstance(class_name, str):
        return f"an object with a malformed class name ({class_name!r})"
    if class_name in FORBIDDEN_CLASSES:
        return FORBIDDEN_CLASSES[class_name]
    if class_name in _INNER_MARKERS:
        return None
    registered = item.get("registered_name")
    if isinstance(registered, str) and registered in TLSTUDIO_OBJECTS:
        return None
    module = item.get("module")
    if module is not None:
        if not isinstance(module, str) or not (module == "keras" or module.startswith("keras.")):
            return f"the custom object {class_name!r} from {module!r}, which TL Studio does not know"
        if isinstance(registered, str) and registered not in (class_name, "function") and ">" in registered:
            return f"the custom object {registered!r}, which TL Studio does not know"
        return None
    if ">" in class_name:
        return None if class_name in TLSTUDIO_OBJECTS else f"the custom object {class_name!r}, which TL Studio does not know"
    if class_name in _BUILTIN_CONTAINERS or _is_builtin_class(class_name):
        return None
    return f"the object {class_name!r}, which is not a built-in Keras object"


def _is_builtin_class(class_name: str) -> bool:
    """Whether a legacy (module-less) class name is one of Keras' own layers, initialisers, ..."""
    import keras

    namespaces = (keras.layers, keras.initializers, keras.regularizers, keras.constraints, keras.optimizers,
                  keras.losses, keras.metrics, keras.dtype_policies)
    return any(isinstance(getattr(space, class_name, None), type) for space in namespaces)
