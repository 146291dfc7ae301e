"""packaging/build.py's logic: paths, commands, environment, sizes, verdicts. The real build runs in .ci/run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_build():
    spec = importlib.util.spec_from_file_location("tlstudio_packaging_build", ROOT / "packaging" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


build = _load_build()


def test_executable_path_per_platform(tmp_path):
    assert build.executable_path(tmp_path, "linux") == tmp_path / "tlstudio" / "tlstudio"
    assert build.executable_path(tmp_path, "win32") == tmp_path / "tlstudio" / "tlstudio.exe"


def test_pyinstaller_command_builds_the_spec_into_dist():
    command = build.pyinstaller_command("/py")
    assert command[:3] == ["/py", "-m", "PyInstaller"]
    assert command[-1] == str(ROOT / "packaging" / "tlstudio.spec")
    assert command[command.index("--distpath") + 1] == str(ROOT / "dist")
    assert command[command.index("--workpath") + 1] == str(ROOT / "build")
    assert "--clean" not in command and "--clean" in build.pyinstaller_command("/py", clean=True)


def test_headless_environment_drops_every_display():
    env = {"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0", "QT_QPA_PLATFORM": "xcb", "HOME": "/home/u"}
    assert build.headless_environment(env) == {"HOME": "/home/u"}


def test_folder_size_counts_files_not_links(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 5)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert build.folder_size(tmp_path) == (15, 2)


@pytest.mark.parametrize(
    ("size", "text"), [(999, "999 bytes"), (1500, "1.5 kB"), (250_000_000, "250.0 MB"), (1_300_000_000, "1.3 GB")]
)
def test_human_size(size, text):
    assert build.human_size(size) == text


def test_self_test_verdict():
    ok = "noise\nTL Studio self-test OK (tlstudio 0.1.0 (bundle); 9.0 s)\n"
    assert build.self_test_passed(0, ok)
    assert not build.self_test_passed(1, ok)
    assert not build.self_test_passed(0, "TL Studio self-test FAILED while training one epoch: ...")


def test_no_display_verdict():
    message = "TL Studio needs a graphical desktop, but no display was found"
    assert build.no_display_handled(1, message)
    assert not build.no_display_handled(-6, "qt.qpa.plugin: Could not load the Qt platform plugin")
    assert not build.no_display_handled(0, message)


def test_run_check_reports_exit_output_and_timeout():
    code, output, _ = build.run_check("echo", [sys.executable, "-c", "print('hi')"], 60, {})
    assert (code, output.strip()) == (0, "hi")
    code, output, _ = build.run_check("sleep", [sys.executable, "-c", "import time; time.sleep(5)"], 0.5, {})
    assert code == -1 and "sleep: no answer after" in output


def test_missing_pyinstaller_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setattr(build, "have_pyinstaller", lambda: False)
    assert build.main([]) == 2
    assert "make bundle" in capsys.readouterr().err


def test_checks_an_existing_bundle(tmp_path, monkeypatch, capsys):
    exe = tmp_path / "tlstudio" / "tlstudio"
    exe.parent.mkdir()
    exe.write_bytes(b"\0" * 2000)
    monkeypatch.setattr(build, "executable_path", lambda: exe)
    monkeypatch.setattr(
        build, "check_bundle", lambda path: [build.CheckResult("self-test", True, 3.0, "TL Studio self-test OK (x)\n")]
    )
    assert build.main(["--skip-build"]) == 0
    out = capsys.readouterr().out
    assert "self-test: passed in 3 s" in out
    assert "TL Studio self-test OK (x)" in out
    assert "(2.0 kB, 1 files)" in out


def test_a_failed_check_fails_the_build(tmp_path, monkeypatch, capsys):
    exe = tmp_path / "tlstudio" / "tlstudio"
    exe.parent.mkdir()
    exe.write_bytes(b"\0")
    monkeypatch.setattr(build, "executable_path", lambda: exe)
    monkeypatch.setattr(build, "check_bundle", lambda path: [build.CheckResult("no-display start", False, 1.0, "Aborted")])
    assert build.main(["--skip-build"]) == 1
    captured = capsys.readouterr()
    assert "no-display start: FAILED" in captured.out
    assert "Aborted" in captured.err
