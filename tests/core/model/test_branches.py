"""Branch units: where a network's branches split and join, named for the network view."""

from __future__ import annotations

import keras
import pytest

from tlstudio.core.model.backbones import build_base
from tlstudio.core.model.branches import branch_units
from tlstudio.core.model.tensors import catalogue
from tlstudio.core.spec.recipe import BaseSpec


def _parallel_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3), name="image_in")
    stem = keras.layers.Conv2D(4, 1, name="stem")(inputs)
    left = keras.layers.Conv2D(2, 1, name="mixed_left")(stem)
    right = keras.layers.Conv2D(2, 3, padding="same", name="mixed_right")(stem)
    joined = keras.layers.Concatenate(name="mixed_concat")([left, right])
    return keras.Model(inputs, keras.layers.Conv2D(4, 1, name="after")(joined))


@pytest.fixture(scope="module")
def lite0_infos():
    return catalogue(build_base(BaseSpec(name="efficientnet-lite0", input_size=64)))


def test_lite0_residual_blocks_are_units_that_join_at_their_add(lite0_infos):
    units = branch_units(lite0_infos)
    assert [u.name for u in units] == [
        "block2b", "block3b", "block4b", "block4c", "block5b", "block5c", "block6b", "block6c", "block6d"
    ]
    block3b = units[1]
    assert block3b.join == "block3b_add:0" and block3b.join_type == "Add" and block3b.skip
    assert block3b.members[0] == "block3b_expand_conv:0" and block3b.members[-1] == "block3b_project_bn:0"
    assert block3b.summary() == "block3b: 8 layers + skip (add)"
    assert block3b.label() == "block3b + skip (add)"
    by_name = {info.name: info for info in lite0_infos}
    assert all(not by_name[m].cuttable and by_name[m].joins_at == "block3b_add:0" for m in block3b.members)
    assert by_name["block3b_add:0"].cuttable
    assert set(by_name["block3b_add:0"].merges) == {"block3b_project_bn:0", "block3a_project_bn:0"}


def test_parallel_paths_are_a_unit_without_a_skip():
    (unit,) = branch_units(catalogue(_parallel_model()))
    assert unit.members == ("mixed_left:0", "mixed_right:0") and unit.join == "mixed_concat:0"
    assert not unit.skip
    assert unit.summary() == "mixed: 2 layers on parallel paths (concatenate)"
    assert unit.label() == "mixed: parallel paths (concatenate)"


def test_a_plain_chain_has_no_units(tiny_vgg):
    infos = catalogue(tiny_vgg)
    assert branch_units(infos) == []
    assert all(info.joins_at == "" and info.merges == () for info in infos)
