"""Install (as root with apt-get) or name the system libraries Qt's X11 plugin needs.

``make run`` calls ``python3 packaging/system_libs.py --install`` with the system
Python, before the app is installed, so this loads ``tlstudio/system_libs.py``
straight from the source tree; that module holds the check and the message.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_MODULE = Path(__file__).resolve().parents[1] / "tlstudio" / "system_libs.py"


def _load():
    spec = importlib.util.spec_from_file_location("tlstudio_system_libs", _MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(_load().main(sys.argv[1:]))
