"""Check, before Qt starts, that the desktop can be reached and Qt's X11 plugin can load.

Qt's ``xcb`` platform plugin needs a few system libraries that minimal Linux
installs (containers, servers, fresh WSL) lack. Without them Qt aborts with
"Could not load the Qt platform plugin xcb" and a core dump, which tells a user
nothing about what to install. This module finds the missing libraries with
ctypes and names the exact ``apt-get install`` command instead. It imports no Qt,
so it runs even when Qt itself cannot start, and ``packaging/system_libs.py``
(used by ``make run``) can call it with the system Python.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys
from typing import Mapping, Sequence

# Library name as ctypes.util.find_library spells it -> the Debian/Ubuntu package providing it.
XCB_LIBRARIES: dict[str, str] = {
    "xcb-cursor": "libxcb-cursor0",
    "xkbcommon-x11": "libxkbcommon-x11-0",
    "xcb-icccm": "libxcb-icccm4",
    "xcb-keysyms": "libxcb-keysyms1",
    "xcb-shape": "libxcb-shape0",
    "xcb-render-util": "libxcb-render-util0",
    "xcb-image": "libxcb-image0",
}


def _loadable(name: str) -> bool:
    """True when the shared library ``lib<name>`` is found and loads."""
    found = ctypes.util.find_library(name)
    if not found:
        return False
    try:
        ctypes.CDLL(found)
    except OSError:
        return False
    return True


def missing_xcb_packages() -> list[str]:
    """The packages whose libraries Qt's xcb plugin needs and this system lacks."""
    return [package for name, package in XCB_LIBRARIES.items() if not _loadable(name)]


def apt_command(packages: Sequence[str]) -> str:
    """The command that installs ``packages`` on Debian or Ubuntu."""
    return "sudo apt-get install -y " + " ".join(packages)


def display_problem(
    env: Mapping[str, str] | None = None,
    platform: str | None = None,
    missing: Sequence[str] | None = None,
) -> str | None:
    """Why the GUI cannot start here, as a message for the terminal, or None when it can.

    Only Linux is checked, and only when the user did not choose a Qt platform
    (``QT_QPA_PLATFORM``, e.g. ``offscreen``). ``missing`` overrides the library
    lookup (for tests).
    """
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux") or env.get("QT_QPA_PLATFORM"):
        return None
    has_x11 = bool(env.get("DISPLAY"))
    has_wayland = bool(env.get("WAYLAND_DISPLAY"))
    if not has_x11 and not has_wayland:
        return (
            "TL Studio needs a graphical desktop, but no display was found "
            "(neither DISPLAY nor WAYLAND_DISPLAY is set).\n"
            "Start it from a desktop session, use 'ssh -X' for X11 forwarding, run it under a virtual "
            "display (xvfb-run tlstudio), or use the command line: tlstudio --help"
        )
    if not has_x11 or env.get("XDG_SESSION_TYPE") == "wayland":
        return None
    packages = missing_xcb_packages() if missing is None else list(missing)
    if not packages:
        return None
    return (
        "TL Studio cannot open its window: Qt's X11 (xcb) plugin needs system libraries "
        f"that are missing here: {', '.join(packages)}.\n"
        f"Install them with:\n\n    {apt_command(packages)}\n\n"
        "then start TL Studio again."
    )


def install_missing(run=subprocess.run) -> int:
    """Install the missing xcb libraries when possible, else print the command.

    Installs with apt-get when running as root on a system that has it;
    otherwise prints exactly what to run. Returns a process exit status
    (0 also when only the command was printed: the app will say it again).
    """
    if not sys.platform.startswith("linux"):
        return 0
    packages = missing_xcb_packages()
    if not packages:
        return 0
    apt_get = shutil.which("apt-get")
    if apt_get and hasattr(os, "geteuid") and os.geteuid() == 0:
        print(f"Installing the system libraries Qt needs: {' '.join(packages)}", flush=True)
        result = run([apt_get, "install", "-y", *packages], check=False)
        if result.returncode != 0:
            print(f"apt-get failed. Run it yourself:\n    {apt_command(packages)}", file=sys.stderr)
        return result.returncode
    print(
        f"TL Studio's window needs system libraries that are missing: {', '.join(packages)}.\n"
        f"Install them with:\n    {apt_command(packages)}",
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``--install``: install or name the missing libraries; otherwise report what the GUI would."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--install" in args:
        return install_missing()
    problem = display_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    print("The system libraries TL Studio's window needs are present.")
    return 0
