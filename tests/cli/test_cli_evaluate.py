"""``evaluate``, ``explain``, ``activations``, ``compare-cuts``, ``predict --csv`` and ``runs``
as a user runs them: the real commands, in one subprocess (TensorFlow is imported once)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from PIL import Image

from tlstudio.core.data.samples import SAMPLE_CLASSES, make_sample_folders, make_tiny_vgg

SUBPROCESS_TIMEOUT_S = 300

SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from tlstudio.cli import main

    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([args[0], "-q", *args[1:]])
        return {"args": list(args), "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}

    images, base, work = sys.argv[1:4]
    circle = f"{images}/circles/circles_000.png"
    results = {
        "train": run("train", "--data", images, "--base", base, "--input-size", "32", "--epochs", "2",
                     "--batch-size", "8", "--out", f"{work}/run", "--json"),
        "evaluate_json": run("evaluate", f"{work}/run", "--top-k", "2", "--json"),
        "evaluate_table": run("evaluate", f"{work}/run", "--mistakes", "2"),
        "evaluate_test": run("evaluate", f"{work}/run", "--split", "test"),
        "explain": run("explain", f"{work}/run", circle, "--out", f"{work}/cam.png"),
        "explain_tensor": run("explain", f"{work}/run", circle, "--tensor", "block2_conv2:0", "--class", "stripes",
                              "--out", f"{work}/cam2.png"),
        "explain_bad_class": run("explain", f"{work}/run", circle, "--class", "dogs", "--out", f"{work}/x.png"),
        "explain_bad_image": run("explain", f"{work}/run", f"{work}/missing.png", "--out", f"{work}/x.png"),
        "activations": run("activations", f"{work}/run", circle, "--tensor", "block1_conv2:0", "--out",
                           f"{work}/maps.png"),
        "predict_csv": run("predict", f"{work}/run", circle, f"{images}/stripes", "--top", "2", "--csv",
                           f"{work}/predictions.csv"),
        "compare_cuts": run("compare-cuts", "--data", images, "--base", base, "--input-size", "32",
                            "--cuts", "block1_pool:0,block3_pool:0", "--json"),
        "compare_default": run("compare-cuts", "--data", images, "--base", base, "--input-size", "32", "--json"),
        "compare_bad_cut": run("compare-cuts", "--data", images, "--base", base, "--cuts", "block3_pool"),
        "runs": run("runs", work, "--json"),
    }
    with open(f"{work}/results.json", "w") as handle:
        json.dump(results, handle)
    """
)


def one_error_line(result: dict, *fragments: str) -> None:
    """A user mistake: exit status 2 and one ``tlstudio: error:`` line, no traceback."""
    assert result["code"] == 2, result
    lines = [line for line in result["stderr"].splitlines() if line.startswith("tlstudio: error:")]
    assert len(lines) == 1 and "Traceback" not in result["stderr"], result["stderr"]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_evaluate_explain_activations_compare_and_predict_csv(tmp_path):
    images = make_sample_folders(tmp_path / "images", per_class=10)
    base = tmp_path / "tiny_vgg.keras"
    make_tiny_vgg().save(base)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(images), str(base), str(work)],
        capture_output=True, text=True, env=env, timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((work / "results.json").read_text())
    for name, result in results.items():
        if not name.endswith(("_test", "_bad_class", "_bad_image", "_bad_cut")):
            assert result["code"] == 0, (name, result)
    run_dir = work / "run"

    report = json.loads(results["evaluate_json"]["stdout"])
    assert report["split"] == "val" and report["images"] == 6 and report["top_k"] == 2
    assert len(report["confusion_matrix"]) == 3 and sum(map(sum, report["confusion_matrix"])) == 6
    assert [c["name"] for c in report["per_class"]] == list(SAMPLE_CLASSES)
    assert [c["support"] for c in report["per_class"]] == [2, 2, 2]
    assert 0.0 <= report["accuracy"] <= report["top_k_accuracy"] <= 1.0
    losses = [m["loss"] for m in report["mistakes"]]
    assert losses == sorted(losses, reverse=True)
    assert (run_dir / "evaluation.json").is_file()

    table = results["evaluate_table"]["stdout"]
    assert "Confusion matrix" in table and "precision" in table and "evaluation.json" in table
    one_error_line(results["evaluate_test"], "no test split")

    assert "at block3_pool:0" in results["explain"]["stdout"]
    explained = results["explain_tensor"]["stdout"]
    assert "class stripes" in explained and "block2_conv2:0" in explained
    for png in ("cam.png", "cam2.png"):
        with Image.open(work / png) as picture:
            assert picture.size == (48, 48) and picture.mode == "RGB"  # the image's own size
    one_error_line(results["explain_bad_class"], "circles, squares, stripes", "'dogs'")
    one_error_line(results["explain_bad_image"], "missing.png")
    with Image.open(work / "maps.png") as picture:
        assert picture.mode == "L" and picture.size[0] > 32

    with open(work / "predictions.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(row["path"]).parent.name for row in rows] == ["circles"] + ["stripes"] * 10
    assert all(row["label1"] in SAMPLE_CLASSES and 0.0 <= float(row["probability1"]) <= 1.0 for row in rows)
    assert all(row["label2"] and row["error"] == "" for row in rows)

    cuts = json.loads(results["compare_cuts"]["stdout"])
    assert [c["tensor"] for c in cuts] == ["block1_pool:0", "block3_pool:0"]
    assert [c["feature_size"] for c in cuts] == [4, 8]
    defaults = json.loads(results["compare_default"]["stdout"])
    assert [c["tensor"] for c in defaults] == ["block1_pool:0", "block2_pool:0", "block3_pool:0"]
    one_error_line(results["compare_bad_cut"], "block3_pool:0")

    listed = json.loads(results["runs"]["stdout"])
    assert [Path(r["path"]).name for r in listed] == ["run"]
    assert listed[0]["recipe"]["cut_tensor"] == "block3_pool:0" and "val_accuracy" in listed[0]["metrics"]
