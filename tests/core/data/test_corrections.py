"""Exclusions and relabels from the health check: stored in the project, applied by the scan and by training."""

from __future__ import annotations

import pytest

from tlstudio.core.data.dataset import apply_corrections, scan_data_spec, scan_dataset
from tlstudio.core.spec.errors import RecipeError
from tlstudio.core.spec.events import Message
from tlstudio.core.spec.recipe import BaseSpec, DataSpec, HeadSpec, Recipe, TrainSpec, load_project, save_project


def test_corrections_round_trip_through_the_project_file(tmp_path):
    data = DataSpec(folders=("x",), excluded_files=("x/a/1.png",), relabels=(("x/a/2.png", "b"),))
    path = save_project(Recipe(data=data), tmp_path / "p.json")
    assert load_project(path).data == data


@pytest.mark.parametrize(
    "fields",
    [{"relabels": (("only-a-path",),)}, {"relabels": (("a.png", ""),)}, {"excluded_files": ("",)},
     {"relabels": ((1, "b"),)}],
)
def test_malformed_corrections_are_refused_with_a_message(fields):
    with pytest.raises(RecipeError, match="Relabels|Excluded files"):
        DataSpec(**fields)


def test_scan_excludes_and_relabels_without_touching_files(image_root):
    circles = sorted((image_root / "circles").iterdir())
    spec = DataSpec(
        folders=(str(image_root),),
        excluded_files=(str(circles[0]),),
        relabels=((str(circles[1]), "squares"),),
    )
    dataset = scan_data_spec(spec)
    items = {item.path: item for item in (*dataset.train, *dataset.val)}
    assert str(circles[0]) not in items
    assert any(s.path == str(circles[0]) and "excluded" in s.reason for s in dataset.skipped)
    assert dataset.classes[items[str(circles[1])].label] == "squares"
    assert dataset.counts == {"circles": 10, "squares": 13, "stripes": 12}
    assert circles[0].exists() and circles[1].exists()
    assert apply_corrections(dataset, spec) == dataset


def test_a_relabel_to_an_unknown_class_is_ignored_with_a_warning(image_root):
    path = str(next((image_root / "circles").iterdir()))
    events = []
    dataset = apply_corrections(
        scan_dataset([image_root]), DataSpec(folders=(str(image_root),), relabels=((path, "dogs"),)), events.append
    )
    assert dataset.counts["circles"] == 12
    assert any(isinstance(e, Message) and "dogs" in e.text and e.level == "warning" for e in events)


def test_corrections_reach_training_also_with_a_dataset_scanned_without_them(image_root, tiny_vgg, tmp_path):
    from tlstudio.core.train import training

    stripes = [str(p) for p in (image_root / "stripes").iterdir()]
    squares = [str(p) for p in (image_root / "squares").iterdir()]
    data = DataSpec(folders=(str(image_root),), excluded_files=tuple(stripes),
                    relabels=tuple((p, "circles") for p in squares[:6]))
    recipe = Recipe(
        data=data,
        base=BaseSpec(name="vgg16", weights="none", input_size=32),
        head=HeadSpec(batch_norm=False),
        training=TrainSpec(epochs=1, batch_size=8),
    )
    result = training.train(recipe, dataset=scan_dataset([image_root]), base_model=tiny_vgg, out_dir=tmp_path / "run")
    assert result.classes == ("circles", "squares")
    assert load_project(result.run_dir / "recipe.json").data == data
