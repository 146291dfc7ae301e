"""Model files are checked as data before Keras reads them: no Lambda, TFSMLayer or unknown objects."""

from __future__ import annotations

import json
import zipfile

import keras
import pytest

from tlstudio.core.model import backbones, model_files
from tlstudio.core.model.model_files import KerasVersionError, check_keras_version, check_model_file
from tlstudio.core.model.preprocess import Preprocess
from tlstudio.core.spec.errors import ModelFileError


def small_model(extra=None):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(2, 3, activation="relu")(inputs)
    if extra is not None:
        x = extra(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x)


@pytest.fixture
def never_deserialise(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the file was deserialised")

    monkeypatch.setattr(keras.saving, "load_model", fail)


def forge(path, config):
    """A .keras zip holding ``config`` (and nothing a loader could use)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.14.0"}))
    return path


@pytest.mark.parametrize("version, ok", [("3.10.0", False), ("3.13.9", False), ("3.14.0", True),
                                         ("3.15.1", True), ("4.0.0rc1", True), ("2.15.0", False)])
def test_keras_version_check(version, ok):
    if ok:
        check_keras_version(version)
    else:
        with pytest.raises(KerasVersionError, match=f"Received: keras {version}.*pip install"):
            check_keras_version(version)


def test_the_running_keras_is_recent_enough():
    check_keras_version()


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_lambda_layer_is_refused_before_deserialising(tmp_path, suffix, never_deserialise):
    path = tmp_path / f"lambda{suffix}"
    small_model(keras.layers.Lambda(lambda t: t * 2)).save(path)
    with pytest.raises(ModelFileError, match="refused for safety.*Lambda layer"):
        backbones.load_user_model(path)


def test_a_tfsm_layer_is_refused(tmp_path, never_deserialise):
    config = {"module": "keras.src.models.functional", "class_name": "Functional", "config": {"layers": [
        {"module": "keras.layers", "class_name": "TFSMLayer", "config": {"name": "x", "filepath": "/tmp/evil"}}]}}
    with pytest.raises(ModelFileError, match="TFSMLayer"):
        backbones.load_user_model(forge(tmp_path / "m.keras", config))


@pytest.mark.parametrize("item, expected", [
    ({"module": "evil.payload", "class_name": "Boom", "config": {}}, "custom object 'Boom' from 'evil.payload'"),
    ({"module": "builtins", "class_name": "function", "config": "eval"}, "from 'builtins'"),
    ({"module": "keras.layers", "class_name": "Dense", "registered_name": "Custom>Dense"}, "Custom>Dense"),
    ({"class_name": "Custom>Thing", "config": {}}, "Custom>Thing"),
    ({"class_name": "NoSuchLayer", "config": {}}, "not a built-in Keras object"),
    ({"class_name": ["Lambda"]}, "malformed class name"),
])
def test_unknown_custom_objects_are_refused(tmp_path, item, expected, never_deserialise):
    config = {"module": "keras.src.models.functional", "class_name": "Functional",
              "config": {"layers": [{"module": "keras.layers", "class_name": "Dense",
                                     "config": {"name": "d", "kernel_initializer": item}}]}}
    with pytest.raises(ModelFileError, match=expected.replace("(", "\\(")):
        check_model_file(forge(tmp_path / "m.keras", config))


@pytest.mark.parametrize("content", [b"not a zip", b"PK\x03\x04broken"])
def test_damaged_files_are_a_clear_error(tmp_path, content, never_deserialise):
    path = tmp_path / "m.keras"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="damaged"):
        backbones.load_user_model(path)
    h5 = tmp_path / "m.h5"
    h5.write_bytes(content)
    with pytest.raises(ModelFileError, match="damaged"):
        backbones.load_user_model(h5)


def test_a_zip_without_config_is_refused(tmp_path):
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.weights.h5", b"")
    with pytest.raises(ModelFileError, match="no config.json"):
        check_model_file(path)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_built_in_layers_and_tl_studio_layers_load(tmp_path, suffix):
    path = tmp_path / f"ok{suffix}"
    small_model(Preprocess("none") if suffix == ".keras" else keras.layers.Dropout(0.1)).save(path)
    check_model_file(path)
    model = backbones.load_user_model(path)
    assert model.output_shape == (None, 2)


def test_the_app_entry_refuses_an_old_keras(monkeypatch, capsys):
    from tlstudio import __main__ as entry

    monkeypatch.setattr(model_files.metadata, "version", lambda name: "3.10.0")
    assert entry.main(["--help"]) == 2
    assert "needs Keras 3.14 or newer" in capsys.readouterr().err


def test_without_metadata_the_loaded_keras_is_checked(monkeypatch):
    def missing(name):
        raise model_files.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(model_files.metadata, "version", missing)
    monkeypatch.setattr(keras, "__version__", "3.12.0")
    with pytest.raises(KerasVersionError, match="Received: keras 3.12.0"):
        check_keras_version()
