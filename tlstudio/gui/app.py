"""Start the desktop app: the window first, TensorFlow in the background.

``main()`` checks that a display and Qt's system libraries are there (printing
what to install instead of Qt's abort), creates the application with its name,
icon and the system's light or dark theme and shows the main window at once.
Once its first frame is painted, a :class:`TensorFlowLoader` thread imports
the other pages' modules (then the GUI thread builds the pages, one per
event-loop turn) and TensorFlow. Until it reports
ready, ``ProjectState.tensorflow_ready`` is False and actions that need
TensorFlow are disabled, with "Loading TensorFlow…" in the status bar.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
import time
from importlib import resources
from typing import Sequence

from tlstudio.system_libs import display_problem

APP_NAME = "TL Studio"
ORGANISATION = "TL Studio"
ORGANISATION_DOMAIN = "tlstudio.org"
SWITCH_INTERVAL_S = 0.001
"""How often the interpreter may hand its lock to another thread (see ``create_application``)."""
AFTER_PAINT_MS = 30
"""How long after the window's first paint event the heavy start-up work begins."""
FIRST_FRAME_FALLBACK_MS = 3000
PAGES_WAIT_S = 10.0
"""The longest TensorFlow's import waits for the pages to be built (a page that fails to build shows
its error and does not hold TensorFlow back)."""


def _resource(name: str):
    return resources.files("tlstudio.resources").joinpath(name)


def app_icon():
    """The application icon, from the bundled SVG and PNG."""
    from PySide6.QtGui import QIcon

    icon = QIcon()
    for name in ("icon.svg", "icon.png"):
        with resources.as_file(_resource(name)) as path:
            if path.exists():
                icon.addFile(str(path))
    return icon


def style_sheet() -> str:
    """The app's small style sheet (palette-relative, so it suits light and dark)."""
    resource = _resource("style.qss")
    return resource.read_text(encoding="utf-8") if resource.is_file() else ""


def apply_theme(app) -> None:
    """Fusion style with the system's light or dark palette, followed live.

    Qt 6 gives Fusion the platform's palette where the platform reports one;
    where it only reports the colour scheme (``styleHints().colorScheme()``),
    a matching dark palette is set here so the app still follows the system.
    """
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QPalette

    app.setStyle("Fusion")
    scheme = app.styleHints().colorScheme()
    palette = app.style().standardPalette()
    window_is_dark = palette.color(QPalette.ColorRole.Window).lightness() < 128
    if scheme == Qt.ColorScheme.Dark and not window_is_dark:
        palette = dark_palette()
    app.setPalette(palette)


def dark_palette():
    """A dark Fusion palette for platforms that say "dark" without providing one."""
    from PySide6.QtGui import QColor, QPalette

    palette = QPalette()
    roles = QPalette.ColorRole
    colours = {
        roles.Window: "#2b2d31",
        roles.WindowText: "#e8e8ea",
        roles.Base: "#1f2023",
        roles.AlternateBase: "#2f3136",
        roles.ToolTipBase: "#3a3c42",
        roles.ToolTipText: "#f0f0f0",
        roles.PlaceholderText: "#8d8f96",
        roles.Text: "#e8e8ea",
        roles.Button: "#35373c",
        roles.ButtonText: "#e8e8ea",
        roles.BrightText: "#ff6b6b",
        roles.Link: "#7aa7ff",
        roles.Highlight: "#4a7be0",
        roles.HighlightedText: "#ffffff",
        roles.Mid: "#44464c",
        roles.Dark: "#18191b",
        roles.Light: "#4a4c52",
    }
    for role, colour in colours.items():
        palette.setColor(role, QColor(colour))
    disabled = QPalette.ColorGroup.Disabled
    for role in (roles.WindowText, roles.Text, roles.ButtonText):
        palette.setColor(disabled, role, QColor("#75777d"))
    return palette


def create_application(argv: Sequence[str] | None = None):
    """The QApplication, named, iconised and themed (reused if one exists)."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    # Worker threads (training, TensorFlow's import) run long stretches of Python; the interpreter
    # hands its lock to another thread only every switch interval (5 ms by default), and the GUI
    # thread gives it up on every call into Qt, so painting the loss plot during training waited
    # ~5 ms per Qt call. 1 ms keeps the window's stalls short at little cost to the workers.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    app = QApplication.instance()
    if app is None:
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(list(argv) if argv is not None else [sys.argv[0]])
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setOrganizationName(ORGANISATION)
    app.setOrganizationDomain(ORGANISATION_DOMAIN)
    app.setDesktopFileName("tlstudio")
    app.setWindowIcon(app_icon())
    apply_theme(app)
    app.styleHints().colorSchemeChanged.connect(lambda _scheme: apply_theme(app))
    app.setStyleSheet(style_sheet())
    return app


def _import_tensorflow() -> None:
    """Import TensorFlow and Keras, then set the mixed-precision policy before any base model is built.

    TensorFlow's native libraries are loaded without holding the interpreter
    lock, its C++ start-up lines are hidden (:mod:`tlstudio.core.spec.tensorflow_load`)
    and PySide6's import hook is set aside meanwhile (:mod:`tlstudio.gui.pyside_compat`).
    """
    from tlstudio.core.spec import tensorflow_load
    from tlstudio.gui.pyside_compat import plain_imports

    with plain_imports(), tensorflow_load.quietly():
        tensorflow_load.import_tensorflow(quiet=False)
        import keras  # noqa: F401

        from tlstudio.core.train.acceleration import apply_policy

        apply_policy()


def tensorflow_loader(modules: Sequence[str] = (), pages_built: threading.Event | None = None):
    """A QThread that loads TensorFlow's native libraries, imports ``modules`` (the pages' own),
    then TensorFlow (:func:`_import_tensorflow`).

    Importing in a thread keeps the window answering: the interpreter hands its
    lock back to the GUI thread every ``SWITCH_INTERVAL_S``. It emits
    ``modules_ready`` once ``modules`` are imported (so the GUI thread can
    build the pages without importing anything), then ``ready(seconds)``, or
    ``failed(error)``. With ``pages_built``, TensorFlow's import waits for it
    (at most :data:`PAGES_WAIT_S`): a page built while the import competes for
    the interpreter lock takes twice as long, and the window answers no input
    meanwhile.
    """
    from PySide6.QtCore import QThread, Signal

    from tlstudio.core.spec import tensorflow_load
    from tlstudio.gui.pyside_compat import plain_imports

    class TensorFlowLoader(QThread):
        modules_ready = Signal()
        ready = Signal(float)
        failed = Signal(object)

        def run(self) -> None:
            with tensorflow_load.collections_deferred():  # collecting meanwhile stalls the window
                self._load()

        def _load(self) -> None:
            started = time.perf_counter()
            # First, while the GUI thread is idle: a thread that loads a library holds the dynamic
            # loader's lock, and a GUI thread importing an extension meanwhile would wait for it
            # while holding the interpreter lock, freezing the window for the whole load.
            with contextlib.suppress(OSError), tensorflow_load.quietly():  # their static initialisers log
                tensorflow_load.preload_native_libraries()
            with plain_imports():
                for module in modules:
                    try:
                        importlib.import_module(module)
                    except ImportError:  # the page shows what is missing when it is built
                        pass
            self.modules_ready.emit()
            if pages_built is not None:
                pages_built.wait(PAGES_WAIT_S)
            try:
                _import_tensorflow()
            except Exception as error:  # shown in the error dialog; the data page still works
                self.failed.emit(error)
            else:
                self.ready.emit(time.perf_counter() - started)

    return TensorFlowLoader()


def when_painted(window, callback, fallback_ms: int = FIRST_FRAME_FALLBACK_MS) -> None:
    """Call ``callback`` once, just after ``window`` has painted its first frame.

    Heavy work (TensorFlow's import, building the other pages) waits for it,
    so nothing competes with the first frame for the interpreter lock. If no
    paint comes (a minimised window), ``fallback_ms`` after this call.
    """
    from PySide6.QtCore import QEvent, QObject, QTimer

    done = False

    def fire() -> None:
        nonlocal done
        if not done:
            done = True
            window.removeEventFilter(watcher)
            callback()

    class _FirstPaint(QObject):
        def eventFilter(self, watched, event) -> bool:
            if event.type() == QEvent.Type.Paint and not done:
                # The paint is being handled now; run the callback after it reaches the screen.
                QTimer.singleShot(AFTER_PAINT_MS, fire)
            return False

    watcher = _FirstPaint(window)
    window.installEventFilter(watcher)
    QTimer.singleShot(fallback_ms, fire)


def main(argv: Sequence[str] | None = None) -> int:
    """Open the main window; ``argv`` may name a project file to open. Returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    problem = display_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    app = create_application([sys.argv[0]])

    from tlstudio.gui import errors
    from tlstudio.gui.main_window import PAGES, MainWindow
    from tlstudio.gui.workers import stop_all

    window = MainWindow()
    errors.install(window)
    pages_built = threading.Event()
    loader = tensorflow_loader([module for _title, module, *_rest in PAGES], pages_built)
    loader.ready.connect(lambda _seconds: window.state.set_tensorflow_ready(True))
    loader.failed.connect(window.tensorflow_failed)
    project = next((a for a in args if not a.startswith("-")), None)

    def pages_importable() -> None:
        window.build_pages_in_background(pages_built.set)
        if project:
            window.open_project(project)

    loader.modules_ready.connect(pages_importable)
    when_painted(window, loader.start)
    window.show()
    app.aboutToQuit.connect(pages_built.set)  # closed before the pages were built: the loader need not wait
    app.aboutToQuit.connect(lambda: stop_all(30_000))
    try:
        return app.exec()
    finally:
        loader.wait()
        errors.uninstall()


if __name__ == "__main__":
    sys.exit(main())
