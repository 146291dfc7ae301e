"""The base-model registry is the one list of bases: recipe, CLI, app menu, builders and README agree with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlstudio.core.spec import bases
from tlstudio.core.spec.errors import RecipeError
from tlstudio.core.spec.recipe import BaseSpec

README = Path(__file__).resolve().parents[3] / "README.md"


def test_names_in_registry_order_with_the_user_file_last():
    assert bases.BASE_NAMES == ("vgg16", "vgg19", "efficientnet-lite0", "file")
    assert bases.NAMED_BASES == ("vgg16", "vgg19", "efficientnet-lite0")
    assert bases.DOWNLOADABLE_BASES == ("vgg16", "vgg19")


def test_the_recipe_accepts_exactly_the_registry_names():
    for name in bases.NAMED_BASES:
        assert BaseSpec(name=name).name == name
    assert BaseSpec(name="file", model_file="m.keras").name == "file"
    with pytest.raises(RecipeError, match="Expected one of vgg16, vgg19, efficientnet-lite0, file. Received: base='vgg13'"):
        BaseSpec(name="vgg13")
    with pytest.raises(RecipeError, match="Received: base='resnet'"):
        bases.base_info("resnet")


def test_the_top_input_rule_comes_from_the_registry():
    assert BaseSpec(name="vgg19", include_top=True, input_size=224).include_top
    with pytest.raises(RecipeError, match="VGG19 with its fully-connected top only accepts 224x224"):
        BaseSpec(name="vgg19", include_top=True, input_size=160)
    # Bases without a top choice are not held to it.
    assert BaseSpec(name="efficientnet-lite0", include_top=True, input_size=160).input_size == 160


def test_the_app_menu_is_built_from_the_registry():
    assert bases.menu_choices() == (
        ("VGG16", "vgg16", False),
        ("VGG16 with fc1, fc2", "vgg16", True),
        ("VGG19", "vgg19", False),
        ("VGG19 with fc1, fc2", "vgg19", True),
        ("EfficientNet-Lite0 (offline)", "efficientnet-lite0", False),
        ("Open model file…", "file", False),
    )


def test_the_readme_table_is_the_registry_table():
    table = bases.markdown_table()
    assert table.count("\n") == len(bases.BASE_MODELS) + 1
    assert table in README.read_text(encoding="utf-8")


def test_builders_preprocessing_and_labels_follow_the_registry():
    from tlstudio.core.model.backbones import preprocessing_mode
    from tlstudio.core.use.cut_comparison import base_label_of

    modes = {name: preprocessing_mode(BaseSpec(name=name, model_file="m.keras")) for name in bases.BASE_NAMES}
    assert modes == {"vgg16": "caffe", "vgg19": "caffe", "efficientnet-lite0": "lite", "file": "none"}

    class Named:
        def __init__(self, name):
            self.name = name

    assert [base_label_of(Named(n)) for n in ("vgg16", "efficientnet_lite0", "mine")] == [
        "vgg16", "efficientnet-lite0", "mine"
    ]


def test_default_cuts_are_what_the_catalogue_chooses_on_the_built_models():
    from tlstudio.core.model.backbones import build_base
    from tlstudio.core.model.tensors import default_cut_tensor
    from tlstudio.core.data.samples import make_tiny_vgg

    for name in ("vgg16", "efficientnet-lite0"):
        model = build_base(BaseSpec(name=name, weights="none", input_size=32))
        assert default_cut_tensor(model) == bases.base_info(name).default_cut
    # VGG with its top at 224x224 is 138M parameters; the tiny model has the same top layer names.
    assert default_cut_tensor(make_tiny_vgg(include_top=True)) == bases.base_info("vgg16").default_cut_with_top
