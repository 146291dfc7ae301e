"""``tlstudio --self-test``: the real run in a subprocess without a display, and its failure path."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from tlstudio import __main__ as entry
from tlstudio import self_test


def test_self_test_passes_without_a_display():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    completed = subprocess.run(
        [sys.executable, "-m", "tlstudio", "--self-test"], env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("TL Studio self-test OK (tlstudio ")
    for name in ("TensorFlow", "Keras", "PySide6", "pyqtgraph", "Python"):
        assert name in lines[0]


def test_a_failing_step_is_named_and_exits_1(monkeypatch):
    def broken(context):
        raise RuntimeError("no converter")

    monkeypatch.setattr(self_test, "STEPS", (("doing the impossible", broken),))
    out, err = io.StringIO(), io.StringIO()
    assert self_test.run_self_test(out, err) == 1
    assert out.getvalue() == "TL Studio self-test FAILED while doing the impossible: RuntimeError: no converter\n"
    assert "Traceback" in err.getvalue()


def test_wrong_results_fail_too(monkeypatch):
    def wrong(context):
        raise self_test.SelfTestFailure("tflite: top-1 agreement 0.50")

    monkeypatch.setattr(self_test, "STEPS", (("exporting", wrong),))
    out = io.StringIO()
    assert self_test.run_self_test(out, io.StringIO()) == 1
    assert "SelfTestFailure: tflite: top-1 agreement 0.50" in out.getvalue()


def test_entry_point_routes_self_test_before_the_gui(monkeypatch):
    calls = []
    monkeypatch.setattr(self_test, "main", lambda argv: calls.append(list(argv)) or 0)
    assert entry.main(["--self-test"]) == 0
    assert calls == [[]]


def test_extra_arguments_are_refused(capsys):
    assert self_test.main(["--fast"]) == 2
    assert "--self-test takes no other arguments. Received: --fast" in capsys.readouterr().err
