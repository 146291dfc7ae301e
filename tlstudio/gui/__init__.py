"""The desktop app (PySide6, pyqtgraph): every Qt import of TL Studio lives in this package.

PySide6 6.12.0 on Python 3.11 drops a reference to ``None`` on each call of a
method that returns nothing, and a running app dies with "Fatal Python error:
none_dealloc"; ``pyproject.toml`` excludes that release.
"""
