"""``tlstudio train --resume`` and ``--out``, and ``tlstudio runs`` with interrupted and broken runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tlstudio.core.spec.recipe import BaseSpec, DataSpec, Recipe, save_project
from tlstudio.core.train import runs


def run_cli(*args: str, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    """``python -m tlstudio ARGS`` on the CPU, with the test's user folders."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-m", "tlstudio", *args], capture_output=True, text=True, env=env,
                            timeout=300)
    if check_rc is not None:
        assert result.returncode == check_rc, f"{args}: rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    """A user mistake: exactly one ``tlstudio: error:`` line naming ``fragments``, no traceback."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("tlstudio: error:")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def _run_folder(folder, status=None, reason=""):
    folder.mkdir(parents=True)
    save_project(Recipe(data=DataSpec(folders=("/data",)), base=BaseSpec(name="vgg16", weights="none",
                                                                           input_size=32)),
                 folder / runs.RECIPE_FILE)
    runs.write_json(folder / runs.CLASSES_FILE, ["a", "b"])
    runs.write_json(folder / runs.METRICS_FILE, {"val_accuracy": 0.5, "val_loss": 1.0})
    if status:
        runs.write_status(folder, status, reason)
    return folder


def test_runs_lists_interrupted_and_broken_runs(tmp_path):
    _run_folder(tmp_path / "good")
    _run_folder(tmp_path / "oom", "interrupted", "Training stopped: the device ran out of memory (after epoch 3)")
    _run_folder(tmp_path / "killed", "running")
    broken = _run_folder(tmp_path / "broken")
    (broken / runs.CLASSES_FILE).write_text("[oops", encoding="utf-8")
    (tmp_path / "holiday photos").mkdir()

    table = run_cli("runs", str(tmp_path)).stdout
    assert "interrupted: Training stopped: the device ran out of memory" in table
    assert f"interrupted: {runs.KILLED_REASON}" in table
    assert "broken: The run's class list" in table and "not valid JSON" in table
    assert "holiday photos" not in table
    assert "tlstudio train --resume" in table

    listed = {Path(entry["path"]).name: entry for entry in json.loads(run_cli("runs", str(tmp_path), "--json").stdout)}
    assert listed["good"]["status"] == "finished"
    assert listed["killed"]["status"] == "interrupted"
    assert listed["broken"]["status"] == "broken"


def test_resume_refuses_recipe_options_and_finished_runs(tmp_path):
    finished = _run_folder(tmp_path / "done")
    result = run_cli("train", "--resume", str(finished), "--epochs", "3", check_rc=2)
    assert_one_line_error(result.stderr, "--resume", "--epochs")
    result = run_cli("train", "--resume", str(finished), check_rc=2)
    assert_one_line_error(result.stderr, "finished; only an interrupted or stopped run can be resumed")


def test_out_refuses_a_folder_that_is_not_a_run(tmp_path):
    data = tmp_path / "data"
    from tlstudio.core.data.samples import make_sample_folders

    make_sample_folders(data, per_class=3)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = run_cli("train", "--data", str(data), "--base", "vgg16", "--weights", "none", "--input-size", "32",
                     "--out", str(mine), check_rc=2)
    assert_one_line_error(result.stderr, "not empty and is not a TL Studio run", "Choose a new or empty folder")
    assert (mine / "notes.txt").read_text() == "keep me"



