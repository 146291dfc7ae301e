"""Project files are checked against an explicit schema; saving is whole or not at all."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlstudio.core.spec import atomic, schema
from tlstudio.core.spec.errors import RecipeError
from tlstudio.core.spec.recipe import BaseSpec, DataSpec, HeadSpec, Recipe, TrainSpec, load_project, save_project


def project(**sections) -> dict:
    return {"tlstudio_project": 1, **sections}


def refused(raw) -> str:
    with pytest.raises(RecipeError) as caught:
        Recipe.from_dict(raw, source="p.json")
    return str(caught.value)


def test_schema_covers_every_recipe_field():
    for name, spec_type in {"data": DataSpec, "base": BaseSpec, "head": HeadSpec, "training": TrainSpec}.items():
        assert set(schema.SECTIONS[name]) == {f.name for f in dataclasses.fields(spec_type)}, name
    assert set(schema.TOP_LEVEL) == {f.name for f in dataclasses.fields(Recipe)} - set(schema.SECTIONS)


@pytest.mark.parametrize("raw, expected", [
    (project(data={"folders": "photos"}), "data.folders: expected a list of strings (put it in brackets"),
    (project(training={"epochs": 2.5}), "training.epochs: expected a whole number; received 2.5"),
    (project(cut_tensor={"layer": "block4_pool"}), "cut_tensor: expected a string or null; received an object"),
    (project(head={"hidden_units": ["abc"]}), "head.hidden_units[0]: expected a whole number; received the string 'abc'"),
    (project(training={"epochs": True}), "training.epochs: expected a whole number; received True"),
    (project(training={"batch_size": 10**12}), "training.batch_size: expected a value from 1 to 65536"),
    (project(data={"val_fraction": float("nan")}), "data.val_fraction: expected a finite number"),
    (project(base={"include_top": "yes"}), "base.include_top: expected true or false"),
    (project(head=[1]), "head: expected an object of settings; received a list"),
    (project(trainig={}), "trainig: unknown key (did you mean 'training'?)"),
    (project(data={"folders": ["a\0b"]}), "data.folders[0]: expected a string without NUL"),
    (project(training={"epochs": 0}), "training.epochs: expected a value from 1"),
    ({"tlstudio_project": True}, "tlstudio_project: expected a format number"),
    ([1, 2], "must hold a JSON object"),
])
def test_each_bad_value_is_one_line_naming_the_field(raw, expected):
    message = refused(raw)
    assert expected in message
    assert "Traceback" not in message


def test_every_problem_is_listed_at_once():
    message = refused(project(data={"folders": "photos"}, training={"epochs": 2.5, "optimizer": 3}))
    lines = [line.strip() for line in message.splitlines()[1:]]
    assert sorted(line.split(":")[0] for line in lines) == ["data.folders", "training.epochs", "training.optimizer"]
    assert "p.json has 3 problems;" in message


def test_one_problem_is_counted_in_the_singular():
    message = refused(project(training={"epochs": 2.5}))
    assert "p.json has 1 problem;" in message


def test_range_rules_of_the_dataclasses_name_their_section():
    message = refused(project(base={"name": "vgg16", "include_top": True, "input_size": 64}))
    assert "base: VGG16 with its fully-connected top" in message


def test_dataclasses_refuse_a_string_of_folders_and_non_numeric_units():
    with pytest.raises(RecipeError, match="not one string"):
        DataSpec(folders="photos")
    with pytest.raises(RecipeError, match="whole numbers"):
        HeadSpec(hidden_units=("abc",))
    with pytest.raises(RecipeError, match="whole numbers"):
        HeadSpec(hidden_units=(2.5,))


def test_a_saved_project_loads_back(tmp_path):
    original = Recipe(data=DataSpec(folders=("photos", os.fsdecode(b"caf\xe9"))), head=HeadSpec(hidden_units=(8,)))
    path = save_project(original, tmp_path / "p.json")
    assert load_project(path) == original


def test_bad_project_is_exit_2_on_the_command_line(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(project(data={"folders": "photos"}, training={"epochs": 2.5})))
    result = subprocess.run(
        [sys.executable, "-m", "tlstudio", "train", "--project", str(path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "data.folders" in result.stderr and "training.epochs" in result.stderr
    assert "Traceback" not in result.stderr


def test_full_disk_on_save_is_a_clear_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_project(Recipe(), tmp_path / "p.json")
    before = path.read_bytes()
    real_fsync = os.fsync

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(RecipeError, match="disk is full"):
        save_project(Recipe(training=TrainSpec(epochs=3)), path)
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


def test_read_only_folder_on_save_is_a_clear_error(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    with pytest.raises(RecipeError, match="Read-only file system"):
        save_project(Recipe(), tmp_path / "p.json")
    assert list(tmp_path.iterdir()) == []


def test_save_on_a_real_full_disk(small_tmpfs):
    filler = small_tmpfs / "filler"
    with pytest.raises(OSError):
        with open(filler, "wb") as handle:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
    big = Recipe(data=DataSpec(folders=tuple(f"/photos/{i:06d}" for i in range(20000))))
    with pytest.raises(RecipeError, match="disk is full"):
        save_project(big, small_tmpfs / "p.json")
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
field_names = st.sampled_from(sorted({k for fields in schema.SECTIONS.values() for k in fields}) + ["x"])
sections = st.dictionaries(field_names, json_values, max_size=4)
projects = st.fixed_dictionaries(
    {"tlstudio_project": st.sampled_from([1, 1, 1, 0, 2, "1", True])},
    optional={
        "data": sections | json_values, "base": sections, "head": sections,
        "training": sections, "cut_tensor": json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(projects)
def test_any_json_is_a_recipe_or_a_recipe_error(raw):
    try:
        recipe = Recipe.from_dict(raw)
    except RecipeError as error:
        assert str(error)
        return
    assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_in_a_project_file_load_or_fail_clearly(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("p") / "p.json"
    path.write_bytes(data)
    try:
        load_project(path)
    except RecipeError:
        pass
