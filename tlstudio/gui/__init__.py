"""The desktop app (PySide6, pyqtgraph): every Qt import of TL Studio lives in this package.

PySide6 6.12.0 on Python 3.11 drops a reference to ``None`` each time a method
returning void is called (``update()``, ``setText()``, ``processEvents()``…),
so a running app dies after some tens of thousands of calls with "Fatal Python
error: none_dealloc". Python 3.12 made ``None`` immortal, which hides the bug
there; on older Pythons ``None`` gets the same effectively unbounded reference
count before any Qt call is made.
"""

import sys

if sys.version_info < (3, 12):
    import ctypes

    ctypes.c_ssize_t.from_address(id(None)).value += 1 << 48
