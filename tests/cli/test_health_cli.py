"""``check``, ``tune``, ``lr-find`` and ``map`` end to end through the command line's entry function."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from tlstudio.cli import entry
from tlstudio.core.spec.recipe import DataSpec, Recipe, load_project, save_project


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = entry.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data(image_root):
    """The sample folders with one image copied byte for byte into another class."""
    source = next(iter(sorted((image_root / "circles").iterdir())))
    shutil.copy(source, image_root / "squares" / "copied.png")
    return image_root


def test_check_json_reports_the_cross_class_copy(capsys, data, tiny_vgg_file):
    code, out, _ = _run(capsys, "check", str(data), "--base", str(tiny_vgg_file), "--input-size", "32", "--json", "-q")
    assert code == 0
    report = json.loads(out)
    assert set(report) == {"mislabeled", "near_duplicates", "outliers"}
    copies = [d for d in report["near_duplicates"] if any(p.endswith("copied.png") for p in d["paths"])]
    assert copies and copies[0]["across_classes"] and copies[0]["similarity"] == pytest.approx(1.0)
    for entry_ in report["mislabeled"]:
        assert set(entry_) == {"path", "given", "suggested", "score"}


def test_check_honours_the_projects_exclusions(capsys, data, tiny_vgg_file, tmp_path):
    copy = str(data / "squares" / "copied.png")
    project = save_project(Recipe(data=DataSpec(folders=(str(data),), excluded_files=(copy,))), tmp_path / "p.json")
    code, out, _ = _run(capsys, "check", "--project", str(project), "--base", str(tiny_vgg_file),
                        "--input-size", "32", "--json", "-q")
    assert code == 0
    assert copy not in out


def test_map_writes_a_png(capsys, data, tiny_vgg_file, tmp_path):
    out_file = tmp_path / "map.png"
    code, out, _ = _run(capsys, "map", str(data), "--base", str(tiny_vgg_file), "--input-size", "32",
                        "--out", str(out_file), "--method", "pca", "--size", "400", "--health", "-q")
    assert code == 0 and "Wrote the map" in out
    with Image.open(out_file) as picture:
        assert picture.width == 400


def test_tune_prints_a_leaderboard_and_saves_the_winner(capsys, data, tiny_vgg_file, tmp_path):
    project = tmp_path / "best.json"
    code, out, _ = _run(capsys, "tune", "--data", str(data), "--base", str(tiny_vgg_file), "--input-size", "32",
                        "--budget", "20", "--candidates", "2", "--save-project", str(project), "--json", "-q")
    assert code == 0
    result = json.loads(out)
    assert result["leaderboard"] and result["project"] == str(project)
    best = result["leaderboard"][0]
    recipe = load_project(project)
    assert recipe.cut_tensor == best["candidate"]["cut_tensor"]
    assert recipe.training.learning_rate == best["candidate"]["learning_rate"]


def test_lr_find_suggests_a_rate(capsys, data, tiny_vgg_file):
    code, out, _ = _run(capsys, "lr-find", "--data", str(data), "--base", str(tiny_vgg_file), "--input-size", "32",
                        "--steps", "30", "--json", "-q")
    assert code == 0
    curve = json.loads(out)
    assert 1e-7 <= curve["suggestion"] <= 10 and len(curve["rates"]) == len(curve["smoothed"])


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("check",), "no image folders"),
        (("tune", "--data", "{data}", "--budget", "0"), "--budget must be positive"),
        (("map", "{data}", "--out", "{missing}/map.png"), "--out must be in an existing folder"),
        (("check", "{missing}"), "does not exist"),
    ],
)
def test_mistakes_are_one_line_errors(capsys, data, tmp_path, args, fragment):
    filled = [a.format(data=data, missing=tmp_path / "missing") for a in args]
    code, _, err = _run(capsys, *filled)
    assert code == 2 and "Traceback" not in err
    assert fragment in err
