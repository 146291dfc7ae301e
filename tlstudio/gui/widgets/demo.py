"""Open a widget or page on its own with made-up data, or screenshot it.

Each widget module ends with a ``_demo()`` run by
``python -m tlstudio.gui.widgets.<module> [--screenshot FILE]``: it calls
:func:`demo_app`, builds the widget with fake data, and hands it to
:func:`show_demo`, which shows it and either runs the event loop or, with
``--screenshot FILE``, saves the window as an image and returns.
"""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QApplication, QWidget


def demo_app() -> QApplication:
    """The running application, or a new one over ``sys.argv`` (widgets need it before they are made)."""
    return QApplication.instance() or QApplication(sys.argv)


def show_demo(widget: QWidget, title: str, size: tuple[int, int]) -> None:
    """Show ``widget`` titled ``title`` at ``size`` (width, height) and run the event loop.

    With ``--screenshot FILE`` on the command line, save the window to FILE
    instead and return.
    """
    app = demo_app()
    widget.resize(*size)
    widget.setWindowTitle(title)
    widget.show()
    if "--screenshot" in sys.argv:
        app.processEvents()
        widget.grab().save(sys.argv[sys.argv.index("--screenshot") + 1])
        return
    app.exec()
