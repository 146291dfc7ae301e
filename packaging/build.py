"""Build TL Studio's one-folder bundle, check it, and report its size.

``make bundle`` runs this after installing the ``bundle`` extra (PyInstaller).
It runs PyInstaller on ``packaging/tlstudio.spec`` (output in ``dist/tlstudio``,
work files in ``build/``), then checks the result as a user without a screen
would meet it:

1. ``tlstudio --self-test`` with no display must print ``TL Studio self-test OK``
   and exit 0 (imports, a tiny training, an export);
2. on Linux, ``tlstudio`` with no display must exit 1 with a readable message
   instead of Qt's abort.

Finally it prints the bundle's size and file count and how long each step took.
Exit status: 0 when built and checked, 1 when a check failed, 2 when PyInstaller
is missing or the build itself failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "packaging" / "tlstudio.spec"
DIST = ROOT / "dist"
WORK = ROOT / "build"
NAME = "tlstudio"
SELF_TEST_OK = "TL Studio self-test OK"
NO_DISPLAY_MESSAGE = "needs a graphical desktop"
SELF_TEST_TIMEOUT_S = 600
NO_DISPLAY_TIMEOUT_S = 120
DISPLAY_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of running the bundle once: passed or not, and what it printed."""

    name: str
    passed: bool
    seconds: float
    output: str


def executable_path(dist: Path = DIST, platform: str = sys.platform) -> Path:
    """Where the bundle's executable is: ``dist/tlstudio/tlstudio`` (``.exe`` on Windows)."""
    suffix = ".exe" if platform.startswith("win") else ""
    return dist / NAME / f"{NAME}{suffix}"


def pyinstaller_command(python: str = sys.executable, clean: bool = False) -> list[str]:
    """The PyInstaller command line that builds the spec into ``dist/`` using ``build/``."""
    command = [python, "-m", "PyInstaller", "--noconfirm", "--distpath", str(DIST), "--workpath", str(WORK)]
    if clean:
        command.append("--clean")
    return [*command, str(SPEC)]


def headless_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) without any display, as on a server or in CI."""
    source = os.environ if env is None else env
    return {key: value for key, value in source.items() if key not in DISPLAY_VARIABLES}


def folder_size(path: Path) -> tuple[int, int]:
    """Total bytes and number of files under ``path``, not following symbolic links."""
    total = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            entry = Path(root) / name
            if entry.is_symlink():
                continue
            total += entry.stat().st_size
            files += 1
    return total, files


def human_size(size: int) -> str:
    """``1.3 GB``-style size (powers of 1000, as file managers show them)."""
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def self_test_passed(returncode: int, output: str) -> bool:
    """The self-test passed when it exited 0 and printed its OK line."""
    return returncode == 0 and any(line.startswith(SELF_TEST_OK) for line in output.splitlines())


def no_display_handled(returncode: int, output: str) -> bool:
    """Started without a display, the app must exit 1 with the readable message (not abort on a signal)."""
    return returncode == 1 and NO_DISPLAY_MESSAGE in output


def run_check(name: str, command: Sequence[str], timeout: float, env: Mapping[str, str]) -> tuple[int, str, float]:
    """Run ``command``; return its exit status, its stdout and stderr together, and the seconds it took."""
    started = time.perf_counter()
    try:
        completed = subprocess.run(
            list(command), env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as expired:
        partial = expired.stdout or ""
        if isinstance(partial, bytes):
            partial = partial.decode(errors="replace")
        return -1, f"{partial}\n{name}: no answer after {timeout:.0f} s", time.perf_counter() - started
    return completed.returncode, completed.stdout + completed.stderr, time.perf_counter() - started


def check_bundle(executable: Path, platform: str = sys.platform) -> list[CheckResult]:
    """Run the self-test (and, on Linux, the no-display start) on the built bundle."""
    env = headless_environment()
    results = []
    code, output, seconds = run_check("self-test", [str(executable), "--self-test"], SELF_TEST_TIMEOUT_S, env)
    results.append(CheckResult("self-test", self_test_passed(code, output), seconds, output))
    if platform.startswith("linux"):
        code, output, seconds = run_check("no-display start", [str(executable)], NO_DISPLAY_TIMEOUT_S, env)
        results.append(CheckResult("no-display start", no_display_handled(code, output), seconds, output))
    return results


def have_pyinstaller() -> bool:
    """Whether PyInstaller can be imported by this Python."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Build, check and measure the bundle; return the exit status described in the module docstring."""
    parser = argparse.ArgumentParser(description="Build and check TL Studio's PyInstaller bundle.")
    parser.add_argument("--clean", action="store_true", help="discard PyInstaller's cache and build/ first")
    parser.add_argument("--skip-build", action="store_true", help="only check the bundle already in dist/")
    args = parser.parse_args(argv)

    executable = executable_path()
    build_seconds = 0.0
    if not args.skip_build:
        if not have_pyinstaller():
            print(
                "PyInstaller is not installed. Install the bundle extra, then build again:\n"
                "    pip install -e '.[bundle]'    (or: make bundle)",
                file=sys.stderr,
            )
            return 2
        started = time.perf_counter()
        completed = subprocess.run(pyinstaller_command(clean=args.clean), cwd=ROOT, check=False)
        build_seconds = time.perf_counter() - started
        if completed.returncode != 0:
            print(f"PyInstaller failed (exit status {completed.returncode}).", file=sys.stderr)
            return 2
    if not executable.is_file():
        print(f"No bundle at {executable}; build it first (make bundle).", file=sys.stderr)
        return 2

    results = check_bundle(executable)
    size, files = folder_size(executable.parent)
    for result in results:
        if not result.passed:
            print(f"--- output of the failed {result.name} check ---\n{result.output.rstrip()}", file=sys.stderr)
        status = "passed" if result.passed else "FAILED"
        print(f"{result.name}: {status} in {result.seconds:.0f} s")
        if result.name == "self-test" and result.passed:
            print("  " + next(line for line in result.output.splitlines() if line.startswith(SELF_TEST_OK)))
    built = f"built in {build_seconds:.0f} s, " if build_seconds else ""
    print(f"Bundle: {executable.parent} ({built}{human_size(size)}, {files} files)")
    return 0 if all(result.passed for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
