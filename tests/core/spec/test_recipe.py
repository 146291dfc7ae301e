"""Recipes validate their values and round-trip through the project file."""

from __future__ import annotations

import json

import pytest

from tlstudio.core.spec.errors import RecipeError
from tlstudio.core.spec.recipe import (
    PROJECT_VERSION,
    BaseSpec,
    DataSpec,
    HeadSpec,
    Recipe,
    TrainSpec,
    load_project,
    save_project,
)


def _custom_recipe() -> Recipe:
    return Recipe(
        data=DataSpec(folders=("/data/cats", "/data/dogs"), val_fraction=0.25, seed=7, excluded_classes=("x",)),
        base=BaseSpec(name="vgg19", weights="none", include_top=True, input_size=224),
        cut_tensor="fc1:0",
        head=HeadSpec(pooling="flatten", hidden_units=(64, 32), dropout=0.3, batch_norm=False, bn_epsilon=1e-5),
        training=TrainSpec(epochs=3, optimizer="sgd", fine_tune_epochs=2, fine_tune_from="block5_conv1"),
    )


def test_project_file_round_trip(tmp_path):
    recipe = _custom_recipe()
    path = save_project(recipe, tmp_path / "p.tlsproj")
    assert load_project(path) == recipe
    raw = json.loads(path.read_text())
    assert raw["tlstudio_project"] == PROJECT_VERSION
    assert raw["head"]["hidden_units"] == [64, 32]


def test_hand_edited_file_with_only_some_settings_uses_defaults(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"tlstudio_project": 1, "data": {"folders": ["/d"]}, "training": {"epochs": 2}}))
    recipe = load_project(path)
    assert recipe.training.epochs == 2
    assert recipe.head == HeadSpec()
    assert recipe.data.folders == ("/d",)


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda: DataSpec(val_fraction=1.5), "val_fraction=1.5"),
        (lambda: BaseSpec(name="resnet"), "base='resnet'"),
        (lambda: BaseSpec(name="vgg16", include_top=True, input_size=64), "224x224"),
        (lambda: HeadSpec(pooling="max"), "pooling='max'"),
        (lambda: HeadSpec(bn_epsilon=0), "bn_epsilon=0"),
        (lambda: TrainSpec(learning_rate=-1), "learning_rate=-1"),
        (lambda: TrainSpec(optimizer="rmsprop"), "optimizer='rmsprop'"),
        (lambda: BaseSpec(name="file"), "model_file"),
    ],
)
def test_invalid_values_name_what_was_received(make, fragment):
    with pytest.raises(RecipeError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        make()


def test_unknown_setting_is_reported_with_the_known_ones(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"tlstudio_project": 1, "head": {"batchnorm": True}}))
    with pytest.raises(RecipeError, match="head.batchnorm: unknown setting \\(did you mean 'batch_norm'\\?\\)"):
        load_project(path)


def test_newer_format_and_non_project_files_are_refused(tmp_path):
    newer = tmp_path / "new.json"
    newer.write_text(json.dumps({"tlstudio_project": PROJECT_VERSION + 1}))
    with pytest.raises(RecipeError, match="newer TL Studio"):
        load_project(newer)
    other = tmp_path / "other.json"
    other.write_text("{}")
    with pytest.raises(RecipeError, match="not a TL Studio project"):
        load_project(other)
    broken = tmp_path / "broken.json"
    broken.write_text("{ nope")
    with pytest.raises(RecipeError, match="not valid JSON \\(line 1"):
        load_project(broken)
    with pytest.raises(RecipeError, match="No project file"):
        load_project(tmp_path / "missing.json")


def test_save_into_missing_folder_is_a_clear_error_and_leaves_no_temp_file(tmp_path):
    with pytest.raises(RecipeError, match="Cannot save the project"):
        save_project(Recipe(), tmp_path / "no" / "such" / "p.json")
    assert list(tmp_path.iterdir()) == []


def test_replace_validates_again():
    with pytest.raises(RecipeError):
        Recipe().replace(base=BaseSpec(input_size=4))
