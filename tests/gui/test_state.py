"""ProjectState: one signal per part of the recipe, emitted only when that part changed."""

from __future__ import annotations

from tlstudio.core.spec.recipe import BaseSpec, Recipe, save_project
from tlstudio.gui.state import ProjectState


def record(state: ProjectState) -> list[tuple[str, object]]:
    seen: list[tuple[str, object]] = []
    for name in ("data_changed", "base_changed", "cut_changed", "head_changed", "training_changed",
                 "recipe_changed"):
        getattr(state, name).connect(lambda value, n=name: seen.append((n, value)))
    return seen


def test_each_change_emits_only_its_parts_signal_then_recipe_changed(qapp):
    state = ProjectState()
    seen = record(state)
    state.update("head", dropout=0.3)
    assert [name for name, _ in seen] == ["head_changed", "recipe_changed"]
    assert seen[0][1] == state.recipe.head and seen[0][1].dropout == 0.3
    seen.clear()
    state.update(cut_tensor="block4_pool:0")
    assert seen[0] == ("cut_changed", "block4_pool:0")
    assert [name for name, _ in seen] == ["cut_changed", "recipe_changed"]
    seen.clear()
    state.update("head", dropout=0.3)
    assert seen == []


def test_replacing_several_parts_emits_each_once(qapp):
    state = ProjectState()
    seen = record(state)
    state.set_recipe(state.recipe.replace(base=BaseSpec(name="vgg19"), cut_tensor="block3_pool:0"))
    assert [name for name, _ in seen] == ["base_changed", "cut_changed", "recipe_changed"]
    assert state.dirty


def test_opening_a_project_emits_every_part(qapp, tmp_path):
    path = tmp_path / "p.json"
    save_project(Recipe(), path)
    state = ProjectState()
    seen = record(state)
    state.open(path)
    assert [name for name, _ in seen] == ["data_changed", "base_changed", "cut_changed", "head_changed",
                                          "training_changed", "recipe_changed"]
    assert not state.dirty


def test_a_starting_recipe_is_not_a_change_by_the_user(qapp):
    state = ProjectState()
    seen = record(state)
    state.set_starting_recipe(state.recipe.replace(base=BaseSpec(name="efficientnet-lite0")))
    assert state.recipe.base.name == "efficientnet-lite0"
    assert [name for name, _ in seen] == ["base_changed", "recipe_changed"]
    assert not state.dirty
