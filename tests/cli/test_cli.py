"""The ``tlstudio`` command line: the real commands end to end in a subprocess,
the fast paths without TensorFlow, and the error and progress conventions."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from tlstudio import cli
from tlstudio.cli import data as cli_data
from tlstudio.cli import entry
from tlstudio.cli.progress import ProgressRenderer, format_bar
from tlstudio.core.spec.errors import Cancelled
from tlstudio.core.spec.events import BatchEnded, EpochEnded, Message, PhaseStarted, Progress
from tlstudio.core.data.samples import make_sample_folders

SUBPROCESS_TIMEOUT_S = 300


def run_cli(*args: str, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    """``python -m tlstudio ARGS`` on the CPU, with the test's user folders."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "tlstudio", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    if check_rc is not None:
        assert result.returncode == check_rc, f"{args}: rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    """A user mistake: exactly one ``tlstudio: error:`` line, no traceback."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("tlstudio: error:")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_workflow_end_to_end(tmp_path, capsys):
    """scan -> inspect -> train 2 epochs -> predict -> export, and a wrong cut tensor, as a user runs them."""
    from tlstudio.core.data.samples import make_tiny_vgg

    images = make_sample_folders(tmp_path / "images", per_class=10)
    base = tmp_path / "tiny_vgg.keras"
    make_tiny_vgg().save(base)

    summary = json.loads(run_cli("data", str(images), "--json").stdout)
    assert [c["name"] for c in summary["classes"]] == ["circles", "squares", "stripes"]
    assert summary["total_images"] == 30 and summary["skipped"] == []

    tensors = json.loads(run_cli("inspect", str(base), "--json").stdout)
    by_name = {t["name"]: t for t in tensors}
    assert by_name["block1_conv1:0"]["receptive_field"] == 3
    assert by_name["block1_pool:0"]["receptive_field"] == 6
    assert all(isinstance(t["receptive_field"], int) for t in tensors)
    assert by_name["block3_pool:0"]["shape"] == [None, 4, 4, 8]
    assert by_name["block3_pool:0"]["default_cut"] is True

    wrong = run_cli("train", "--data", str(images), "--base", str(base), "--cut", "block3_pool", check_rc=2)
    assert_one_line_error(wrong.stderr, "block3_pool:0")

    trained = run_cli(
        "train", "--data", str(images), "--base", str(base), "--input-size", "32", "--epochs", "2",
        "--batch-size", "8", "--out", str(tmp_path / "run"), "--json",
    )
    result = json.loads(trained.stdout)
    assert 0.0 <= result["val_accuracy"] <= 1.0
    run_dir = Path(result["run_dir"])
    assert run_dir == tmp_path / "run" and (run_dir / "model.keras").is_file()
    assert "epoch 2/2" in trained.stderr

    photos = [str(images / "circles" / "circles_000.png"), str(images / "stripes" / "stripes_001.png")]
    predictions = json.loads(run_cli("predict", str(run_dir), *photos, "--top", "2", "--json").stdout)
    assert [p["path"] for p in predictions] == photos
    for prediction in predictions:
        assert prediction["error"] == "" and len(prediction["top"]) == 2
        assert {guess["label"] for guess in prediction["top"]} <= {"circles", "squares", "stripes"}

    destination = tmp_path / "export"
    exported = run_cli("export", str(run_dir), "--to", str(destination), "--formats", "keras,tflite", "--no-costs")
    assert "keras" in exported.stdout and "tflite" in exported.stdout and "FAIL" not in exported.stdout
    assert (destination / "labels.txt").read_text(encoding="utf-8").split() == ["circles", "squares", "stripes"]
    assert cli.main(["export", str(run_dir), "--to", str(destination), "--formats", "keras"]) == 2
    assert_one_line_error(capsys.readouterr().err, "overwrite")


def test_help_and_argument_mistakes_do_not_import_tensorflow(tmp_path):
    """--help, --version, bad arguments, a missing folder and a dry run answer without TensorFlow."""
    images = make_sample_folders(tmp_path / "images", per_class=2)
    script = textwrap.dedent(
        f"""
        import contextlib, io, sys
        import tlstudio.cli as c
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            codes = [
                c.main(["--help"]),
                c.main(["--version"]),
                c.main(["train", "--help"]),
                c.main(["train", "--epochs", "x"]),
                c.main(["inspect", "not-a-base"]),
                c.main(["train", "--data", {str(tmp_path / "missing")!r}, "--base", "vgg16"]),
                c.main(["train", "--data", {str(images)!r}, "--base", "vgg16", "--dry-run"]),
                c.main(["export", {str(tmp_path / "no-run")!r}, "--to", {str(tmp_path / "x")!r}]),
            ]
        assert codes == [0, 0, 0, 2, 2, 2, 0, 2], codes
        assert "usage: tlstudio" in out.getvalue()
        loaded = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
        assert not loaded, loaded
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_user_mistakes_print_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["train", "--epochs", "x"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--epochs", "'x'")
    assert cli.main(["data", str(tmp_path / "nowhere")]) == 2
    assert_one_line_error(capsys.readouterr().err, "nowhere")
    assert cli.main(["train", "--data", str(tmp_path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "--base")
    assert cli.main(["inspect", str(tmp_path / "model.keras")]) == 2
    assert_one_line_error(capsys.readouterr().err, "model.keras")
    assert cli.main(["predict", str(tmp_path / "no-run"), "a.png"]) == 2
    assert_one_line_error(capsys.readouterr().err, "no-run")
    assert cli.main(["train", "--data", str(tmp_path), "--base", "vgg16", "--lr", "-1", "--dry-run"]) == 2
    assert_one_line_error(capsys.readouterr().err, "learning_rate=-1.0")


def test_project_file_round_trip_and_flag_overrides(tmp_path, capsys):
    images = make_sample_folders(tmp_path / "images", per_class=2)
    project = tmp_path / "project.json"
    assert cli.main(["train", "--data", str(images), "--base", "vgg19", "--epochs", "4", "--hidden", "64,32",
                     "--no-batch-norm", "--cut", "block4_pool:0", "--save-project", str(project), "--dry-run"]) == 0
    saved = json.loads(project.read_text(encoding="utf-8"))
    assert saved["base"]["name"] == "vgg19" and saved["head"]["hidden_units"] == [64, 32]
    assert saved["head"]["batch_norm"] is False and saved["cut_tensor"] == "block4_pool:0"
    assert saved["data"]["folders"] == [str(images)]
    capsys.readouterr()

    assert cli.main(["train", "--project", str(project), "--epochs", "7", "--batch-norm", "--dry-run", "-q"]) == 0
    recipe = json.loads(capsys.readouterr().out)
    assert recipe["training"]["epochs"] == 7 and recipe["head"]["batch_norm"] is True
    assert recipe["head"]["hidden_units"] == [64, 32] and recipe["base"]["name"] == "vgg19"


def test_cancel_exits_130(tmp_path, monkeypatch, capsys):
    def interrupted(*args):
        raise KeyboardInterrupt

    def cancelled(*args):
        raise Cancelled("stopped")

    for handler in (interrupted, cancelled):
        monkeypatch.setattr(cli_data, "_cmd_data", handler)
        assert cli.main(["data", str(tmp_path)]) == 130
        err = capsys.readouterr().err
        assert "cancelled" in err and "Traceback" not in err


def test_first_ctrl_c_asks_to_stop_and_the_second_aborts():
    stream = io.StringIO()
    with entry._stop_on_interrupt(ProgressRenderer(stream, tty=False)) as should_stop:
        assert not should_stop()
        os.kill(os.getpid(), signal.SIGINT)
        assert should_stop()
        assert "press Ctrl+C again" in stream.getvalue()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_arguments_open_the_app_and_any_run_a_command(monkeypatch, capsys):
    from tlstudio.__main__ import main

    calls = []
    fake = types.ModuleType("tlstudio.gui.app")
    fake.main = lambda argv=None: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "tlstudio.gui.app", fake)
    assert main([]) == 0
    assert calls == [[]]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("tlstudio ")
    assert calls == [[]]


def test_plain_progress_is_sparse():
    stream = io.StringIO()
    renderer = ProgressRenderer(stream, tty=False)
    for done in range(101):
        renderer(Progress("scan", done, 100))
    renderer(PhaseStarted("head", epochs=2, steps_per_epoch=3, learning_rate=1e-3))
    for batch in range(3):
        renderer(BatchEnded("head", 1, batch, batch, 0.5, 0.8, 1e-3, 100.0, 2.0))
    renderer(EpochEnded("head", 1, {"loss": 0.5, "accuracy": 0.75, "val_loss": 0.6, "val_accuracy": 0.7}))
    renderer(Message("low disk space", level="warning"))
    lines = stream.getvalue().splitlines()
    assert lines[:5] == [
        "scan   0% 0/100", "scan  25% 25/100", "scan  50% 50/100", "scan  75% 75/100", "scan 100% 100/100"
    ]
    assert lines[5] == "head: 2 epochs of 3 batches, learning rate 0.001"
    assert lines[6] == "head epoch 1/2  loss 0.5000  acc 0.7500  val_loss 0.6000  val_acc 0.7000"
    assert lines[7] == "warning: low disk space"
    assert "\r" not in stream.getvalue()


def test_terminal_progress_redraws_one_line_at_most_ten_times_a_second(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    stream = io.StringIO()
    now = [0.0]
    renderer = ProgressRenderer(stream, tty=True, clock=lambda: now[0])
    renderer(PhaseStarted("head", epochs=1, steps_per_epoch=100, learning_rate=1e-3))
    for batch in range(100):
        now[0] = batch * 0.01
        renderer(BatchEnded("head", 1, batch, batch, 0.5, 0.8, 1e-3, 100.0, (99 - batch) * 0.01))
    renderer.close()
    text = stream.getvalue()
    assert 5 <= text.count("\r\033[K") <= 11
    last = "head epoch 1/1 " + format_bar(1.0) + " 100/100  loss 0.5000  acc 0.8000  100 img/s  ETA 0:00\n"
    assert text.endswith(last)

    quiet = io.StringIO()
    renderer = ProgressRenderer(quiet, tty=True, quiet=True)
    renderer(Progress("download", 5_000_000, 10_000_000))
    renderer(Message("note"))
    renderer(Message("careful", level="warning"))
    assert quiet.getvalue() == "warning: careful\n"


def test_formatting_helpers():
    assert format_bar(0.5, width=4) == "[##--]"


def test_hidden_with_spaces_builds_one_layer_per_number(tmp_path, capsys):
    images = make_sample_folders(tmp_path / "images", per_class=2)
    assert cli.main(["train", "--data", str(images), "--base", "vgg16", "--hidden", "256 128",
                     "--dry-run", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["head"]["hidden_units"] == [256, 128]
    assert cli.main(["train", "--data", str(images), "--base", "vgg16", "--hidden", "256 x", "--dry-run"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--hidden", "256 x")


def test_data_warns_about_imbalanced_classes_like_the_app(tmp_path, capsys):
    root = make_sample_folders(tmp_path / "data", classes=("many",), per_class=16)
    make_sample_folders(root, classes=("few",), per_class=4, seed=3)
    assert cli.main(["data", str(root)]) == 0
    out = capsys.readouterr().out
    assert "Warning: The classes are imbalanced: 'many' has 16 images, 'few' only 4" in out
    assert cli.main(["data", str(root), "--json"]) == 0
    assert "'few' only 4" in json.loads(capsys.readouterr().out)["imbalance_warning"]
    balanced = make_sample_folders(tmp_path / "balanced", per_class=3)
    assert cli.main(["data", str(balanced)]) == 0
    assert "imbalanced" not in capsys.readouterr().out


def test_data_counts_meet_their_nouns(tmp_path, capsys):
    root = make_sample_folders(tmp_path / "data", classes=("only",), per_class=1)
    (root / "only" / "notes.txt").write_text("not an image", encoding="utf-8")
    assert cli.main(["data", str(root)]) == 0
    out = capsys.readouterr().out
    assert "1 class, 1 usable image (" in out and "Skipped 1 file:" in out
    assert "classes" not in out.split("\n")[0] and "(s)" not in out
