"""The main window: a sidebar of pages (Data, Model, Train, Evaluate, Export, Predict, Runs), menus, status bar.

It owns the :class:`ProjectState` the pages share, the File menu (a project is
the engine's project file, so the CLI can run it), recent projects and window
geometry in ``QSettings``, and the status bar that says what is happening.
Closing asks about unsaved changes and about running work (training), which it
stops cleanly before the window goes.
"""

from __future__ import annotations

import html
import importlib
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QSettings, QSize, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QStackedWidget,
    QWhatsThis,
    QWidget,
)

from tlstudio.gui import workers
from tlstudio.gui.cache_action import ClearCacheAction
from tlstudio.gui.errors import show_error
from tlstudio.gui.help_menu import show_about, show_glossary
from tlstudio.gui.state import ProjectState

PROJECT_FILTER = "TL Studio projects (*.json);;All files (*)"
MAX_RECENT = 8
PAGE_BUILD_GAP_MS = 20
"""Between two pages built in the background: building one takes up to about 80 ms of the GUI thread,
and two in a row without a gap would hold input and timers for their sum."""

# (title, module, class, needs TensorFlow, what the page is for)
PAGES: tuple[tuple[str, str, str, bool, str], ...] = (
    ("Data", "tlstudio.gui.pages.data_page", "DataPage", False,
     "Your images: drop folders with one sub-folder per class, check the classes, problems and split."),
    ("Model", "tlstudio.gui.pages.model_page", "ModelPage", True,
     "The base model (a pretrained network), where to cut it and the new head trained on top."),
    ("Train", "tlstudio.gui.pages.train_page", "TrainPage", True,
     "Train the head (and optionally fine-tune the base) with live loss and accuracy curves."),
    ("Evaluate", "tlstudio.gui.pages.evaluate_page", "EvaluatePage", True,
     "How well the trained model does on held-out images: metrics, confusion matrix, mistakes, Grad-CAM."),
    ("Export", "tlstudio.gui.pages.export_page", "ExportPage", False,
     "Save the trained model for other programs: Keras, SavedModel, TFLite, ONNX, checked after writing."),
    ("Predict", "tlstudio.gui.pages.predict_page", "PredictPage", True,
     "Drop images or folders to see the model's top predictions for each."),
    ("Runs", "tlstudio.gui.pages.runs_page", "RunsPage", False,
     "Every training run with its recipe and final metrics; compare two runs' curves."),
)

class _MissingPage(QLabel):
    """Shown in place of a page whose module is not part of this build."""

    def __init__(self, title: str, module: str) -> None:
        super().__init__(f"The {title} page is not available in this build ({module} is missing).")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setWordWrap(True)


def load_page(module: str, class_name: str, title: str, state: ProjectState) -> QWidget:
    """Import a page lazily; a page module missing from the build becomes a placeholder."""
    try:
        page_type = getattr(importlib.import_module(module), class_name)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
        return _MissingPage(title, module)
    return page_type(state)


class _PendingPage(QWidget):
    """Holds a page's place in the stack until the page is built (see :meth:`MainWindow.page`)."""


class _Pages(Mapping[str, QWidget]):
    """``window.pages[title]``: the window's pages by title, each built the first time it is asked for."""

    def __init__(self, window: MainWindow) -> None:
        self._window = window

    def __getitem__(self, title: str) -> QWidget:
        return self._window.page(title)

    def __iter__(self) -> Iterator[str]:
        return (title for title, *_ in PAGES)

    def __len__(self) -> int:
        return len(PAGES)


class MainWindow(QMainWindow):
    """TL Studio's window. ``state`` and ``settings`` may be given (tests, screenshots)."""

    def __init__(
        self,
        state: ProjectState | None = None,
        settings: QSettings | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.state = state or ProjectState(parent=self)
        self.settings = settings or QSettings()
        self.pages: Mapping[str, QWidget] = _Pages(self)
        """The pages by title; looking one up builds it if it has not been built yet."""
        self._built: dict[str, QWidget] = {}
        self._needs_tensorflow: list[QWidget] = []
        self._busy_text = ""
        self._closing_after_stop = False
        self._close_scheduled = False
        self.setObjectName("mainWindow")
        self.setMinimumSize(QSize(900, 600))
        self._build_pages()
        self._build_menus()
        self._build_status_bar()
        self.state.busy.connect(self._on_busy)
        self.state.error.connect(lambda error: show_error(self, error))
        self.state.dirty_changed.connect(lambda _dirty: self._update_title())
        self.state.path_changed.connect(lambda _path: self._update_title())
        self.state.tensorflow_ready_changed.connect(self._on_tensorflow_ready)
        self._on_tensorflow_ready(self.state.tensorflow_ready)
        self._update_title()
        self._restore_geometry()

    # ----- layout -----

    def _build_pages(self) -> None:
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setFixedWidth(150)
        self.sidebar.setIconSize(QSize(20, 20))
        self.stack = QStackedWidget()
        for number, (title, _module, _class_name, _needs_tf, purpose) in enumerate(PAGES, start=1):
            self.stack.addWidget(_PendingPage())
            item = QListWidgetItem(f"{number}  {title}")
            item.setToolTip(f"{purpose}\n(Ctrl+{number})")
            item.setWhatsThis(purpose)
            self.sidebar.addItem(item)
        # Only the first page is built now, so the window shows quickly; the others are built when
        # first shown or asked for, or one per event-loop turn after the window shows
        # (build_pages_in_background).
        self.page(PAGES[0][0])
        self.sidebar.currentRowChanged.connect(self._show_row)
        self.sidebar.setCurrentRow(0)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.sidebar)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)

    def _action(self, text: str, slot: Callable, shortcut=None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        action.triggered.connect(lambda _checked=False: slot())
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.new_action = self._action("&New Project", self.new_project, QKeySequence.StandardKey.New,
                                       "Start an empty project")
        self.open_action = self._action("&Open Project…", self.open_project, QKeySequence.StandardKey.Open,
                                        "Open a project file (also runs with: tlstudio train --project FILE)")
        self.save_action = self._action("&Save", self.save_project, QKeySequence.StandardKey.Save,
                                        "Save the project file")
        self.save_as_action = self._action("Save &As…", self.save_project_as, "Ctrl+Shift+S",
                                           "Save the project under a new name")
        self.quit_action = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit, "Quit TL Studio")
        self.recent_menu = QMenu("Open &Recent", self)
        file_menu.addActions([self.new_action, self.open_action])
        file_menu.addMenu(self.recent_menu)
        file_menu.addSeparator()
        file_menu.addActions([self.save_action, self.save_as_action])
        self.export_server_action = self._action(
            "Export for &Server…", self.export_for_server, None,
            "Save the project and copy the command that trains it on a server (tlstudio train --project FILE)",
        )
        file_menu.addAction(self.export_server_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        self._update_recent_menu()

        go_menu = bar.addMenu("&Go")
        self.page_actions: list[QAction] = []
        for number, (title, *_rest) in enumerate(PAGES, start=1):
            action = self._action(f"&{number} {title}", lambda n=number - 1: self.show_page(n),
                                  f"Ctrl+{number}", f"Show the {title} page")
            self.page_actions.append(action)
            go_menu.addAction(action)
        self.addActions(self.page_actions)

        tools_menu = bar.addMenu("&Tools")
        self.clear_cache_action = ClearCacheAction(self, self.state)
        tools_menu.addAction(self.clear_cache_action)
        tools_menu.aboutToShow.connect(self.update_cache_action)

        help_menu = bar.addMenu("&Help")
        whats_this = QWhatsThis.createAction(self)
        whats_this.setText("What's &This?")
        whats_this.setStatusTip("Click this, then click any control to learn what it does")
        help_menu.addAction(whats_this)
        help_menu.addAction(self._action("&Glossary…", self.show_glossary, None,
                                         "What base model, cut tensor, head, batch norm and fine-tuning mean"))
        self.doctor_action = self._action("&GPU Doctor…", self.show_doctor, None,
                                          "Which devices TensorFlow sees, and why a GPU is not used")
        help_menu.addAction(self.doctor_action)
        help_menu.addSeparator()
        help_menu.addAction(self._action("&About TL Studio", self.show_about))

    def _build_status_bar(self) -> None:
        status = self.statusBar()
        self.status_label = QLabel()
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)
        self.busy_bar.setMaximumWidth(140)
        self.busy_bar.setMaximumHeight(14)
        self.busy_bar.setTextVisible(False)
        status.addWidget(self.status_label, 1)
        status.addPermanentWidget(self.busy_bar)
        self._refresh_status()

    # ----- pages and status -----

    def page(self, title: str) -> QWidget:
        """The page called ``title``, built (in place of its placeholder in the stack) if it is not yet."""
        built = self._built.get(title)
        if built is not None:
            return built
        titles = [t for t, *_ in PAGES]
        if title not in titles:
            raise KeyError(title)
        index = titles.index(title)
        _title, module, class_name, needs_tf, _purpose = PAGES[index]
        page = load_page(module, class_name, title, self.state)
        page.setObjectName(f"{title.lower()}Page")
        self._built[title] = page
        placeholder = self.stack.widget(index)
        was_current = self.stack.currentIndex() == index
        self.stack.insertWidget(index, page)
        self.stack.removeWidget(placeholder)
        placeholder.deleteLater()
        if was_current:
            self.stack.setCurrentIndex(index)
        if needs_tf:
            self._needs_tensorflow.append(page)
            self._apply_tensorflow_state(page, self.state.tensorflow_ready)
        return page

    def build_pages_in_background(self, then: Callable[[], object] = lambda: None) -> None:
        """Build the pages not built yet, one at a time with input handled between, so each is ready before
        it is clicked; call ``then`` once all are built."""
        pending = [title for title, *_ in PAGES if title not in self._built]
        QTimer.singleShot(PAGE_BUILD_GAP_MS, self, lambda: self._build_pending_pages(pending, then))

    def _build_pending_pages(self, pending: list[str], then: Callable[[], object]) -> None:
        """Build ``pending[0]`` (a page built meanwhile is left as it is), then the others in later turns; a
        page that fails shows its error and the others are still built."""
        try:
            if pending:
                self.page(pending[0])
        finally:
            if len(pending) > 1:
                QTimer.singleShot(PAGE_BUILD_GAP_MS, self, lambda: self._build_pending_pages(pending[1:], then))
            else:
                then()

    def _show_row(self, row: int) -> None:
        if 0 <= row < len(PAGES):
            self.page(PAGES[row][0])
        self.stack.setCurrentIndex(row)

    def show_page(self, page: int | str) -> None:
        """Show a page by index (0 = Data) or title."""
        index = [title for title, *_ in PAGES].index(page) if isinstance(page, str) else page
        self.sidebar.setCurrentRow(index)

    def current_page_title(self) -> str:
        return PAGES[self.stack.currentIndex()][0]

    def status_text(self) -> str:
        return self.status_label.text()

    def _on_busy(self, text: str) -> None:
        self._busy_text = text
        self._refresh_status()

    def _refresh_status(self) -> None:
        if self._busy_text:
            text, busy = self._busy_text, True
        elif not self.state.tensorflow_ready:
            text, busy = "Loading TensorFlow… (the Data page works already)", True
        else:
            text, busy = "Ready", False
        self.status_label.setText(text)
        self.busy_bar.setVisible(busy)

    def _on_tensorflow_ready(self, ready: bool) -> None:
        for page in self._needs_tensorflow:
            self._apply_tensorflow_state(page, ready)
        self.doctor_action.setEnabled(ready)
        self._refresh_status()

    @staticmethod
    def _apply_tensorflow_state(page: QWidget, ready: bool) -> None:
        page.setEnabled(ready)
        page.setToolTip("" if ready else "Waiting for TensorFlow to load…")

    def tensorflow_failed(self, error: BaseException) -> None:
        """TensorFlow could not be imported: say so; the Data page keeps working, and so does the doctor."""
        self.doctor_action.setEnabled(True)
        self._busy_text = f"TensorFlow could not be loaded: {error}"
        self._refresh_status()
        self.busy_bar.setVisible(False)
        show_error(self, error)

    def _update_title(self) -> None:
        path = self.state.path
        # Ending with the app's name keeps X11 and Windows from appending it a second time.
        title = f"{path.stem}[*] — TL Studio" if path else "TL Studio[*]"
        self.setWindowTitle(title)
        self.setWindowModified(self.state.dirty)

    # ----- projects -----

    def _project_dir(self) -> str:
        if self.state.path is not None:
            return str(self.state.path.parent)
        recent = self.recent_projects()
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    def new_project(self) -> None:
        if self.maybe_save():
            self.state.new()

    def open_project(self, path: str | Path | None = None) -> bool:
        """Open a project file (asking for one when ``path`` is None); False when nothing was opened."""
        if not self.maybe_save():
            return False
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open project", self._project_dir(), PROJECT_FILTER)
            if not path:
                return False
        try:
            self.state.open(path)
        except Exception as error:
            show_error(self, error)
            self._forget_recent(str(path))
            return False
        self._add_recent(str(Path(path).resolve()))
        self.statusBar().showMessage(f"Opened {path}", 4000)
        return True

    def save_project(self) -> bool:
        """Save to the project's file, or ask where when it has none; False when not saved."""
        if self.state.path is None:
            return self.save_project_as()
        return self._save_to(self.state.path)

    def save_project_as(self) -> bool:
        suggested = str(self.state.path or Path(self._project_dir()) / "project.json")
        path, _ = QFileDialog.getSaveFileName(self, "Save project as", suggested, PROJECT_FILTER)
        if not path:
            return False
        target = Path(path)
        if not target.suffix:
            target = target.with_suffix(".json")
        return self._save_to(target)

    def _save_to(self, path: Path) -> bool:
        try:
            saved = self.state.save(path)
        except Exception as error:
            show_error(self, error)
            return False
        self._add_recent(str(saved.resolve()))
        self.statusBar().showMessage(f"Saved {saved}", 4000)
        return True

    def maybe_save(self) -> bool:
        """Offer to save unsaved changes; False when the user cancelled."""
        if not self.state.dirty:
            return True
        answer = QMessageBox.question(
            self,
            "Unsaved changes",
            "The project has unsaved changes. Save them first?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Save,
        )
        if answer == QMessageBox.StandardButton.Save:
            return self.save_project()
        return answer == QMessageBox.StandardButton.Discard

    def export_for_server(self) -> str | None:
        """Save the project, put the command that trains it on the clipboard and explain; None when not saved.

        The command names the project file; the server needs the same image
        folders at the same paths, and for several machines ``TF_CONFIG``.
        """
        if not self.save_project():
            return None
        command = f"tlstudio train --project {shlex.quote(str(self.state.path.resolve()))}"
        QGuiApplication.clipboard().setText(command)
        folders = self.state.recipe.data.folders
        if folders:
            where = "<ul>" + "".join(f"<li><code>{html.escape(f)}</code></li>" for f in folders) + "</ul>"
            data_note = (f"<p>Copy the project file and the image folders to the same paths on the server:</p>"
                         f"{where}")
        else:
            data_note = ("<p><b>The project names no image folders</b>, so the server would have nothing to "
                         "train on: add your folders on the Data page, then export again.</p>")
        box = QMessageBox(QMessageBox.Icon.Information, "Export for server",
                          "<p>The command that trains this project is on the clipboard:</p>"
                          f"<p><code>{html.escape(command)}</code></p>" + data_note +
                          "<p>To train on several machines at once, set <code>TF_CONFIG</code> on each of "
                          "them and run the same command there (see “A project on a cluster” in the "
                          "README).</p>",
                          QMessageBox.StandardButton.Ok, self)
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        self.export_box = box
        self.statusBar().showMessage(f"Copied: {command}", 8000)
        return command

    # ----- recent projects -----

    def recent_projects(self) -> list[str]:
        value = self.settings.value("recent_projects", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _add_recent(self, path: str) -> None:
        recent = [path] + [p for p in self.recent_projects() if p != path]
        self.settings.setValue("recent_projects", recent[:MAX_RECENT])
        self._update_recent_menu()

    def _forget_recent(self, path: str) -> None:
        resolved = str(Path(path).resolve())
        self.settings.setValue("recent_projects", [p for p in self.recent_projects() if p != resolved])
        self._update_recent_menu()

    def _update_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.recent_projects()
        for number, path in enumerate(recent, start=1):
            action = self.recent_menu.addAction(f"&{number} {Path(path).name}")
            action.setToolTip(path)
            action.setStatusTip(path)
            action.triggered.connect(lambda _checked=False, p=path: self.open_project(p))
        if not recent:
            self.recent_menu.addAction("No recent projects").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            clear = self.recent_menu.addAction("Clear list")
            clear.triggered.connect(self._clear_recent)

    def _clear_recent(self) -> None:
        self.settings.setValue("recent_projects", [])
        self._update_recent_menu()

    # ----- help -----

    def update_cache_action(self) -> int | None:
        """Show the feature cache's size in the Tools menu; its bytes (None when unreadable)."""
        return self.clear_cache_action.update_size()

    def show_glossary(self) -> None:
        show_glossary(self)

    def show_doctor(self) -> QDialog:
        """Open the GPU Doctor, which examines TensorFlow's devices in a worker."""
        from tlstudio.gui.doctor_dialog import open_doctor_dialog

        self.doctor_dialog = open_doctor_dialog(self)
        return self.doctor_dialog

    def show_about(self) -> None:
        show_about(self)

    # ----- closing -----

    def closeEvent(self, event: QCloseEvent) -> None:
        running = workers.active_workers()
        if running:
            event.ignore()
            if not self._closing_after_stop and not self._confirm_stop(running):
                return
            self._stop_then_close(running)
            return
        if not self.maybe_save():
            event.ignore()
            self._closing_after_stop = False
            return
        self.settings.setValue("main_window/geometry", self.saveGeometry())
        self.settings.setValue("main_window/state", self.saveState())
        event.accept()

    def _confirm_stop(self, running: list[workers.WorkerHandle]) -> bool:
        """Ask before stopping work the user would lose (training, an export); other work just stops."""
        kinds = {handle.kind for handle in running if handle.kind.important}
        if not kinds:
            return True
        what = "Training is" if workers.JobKind.TRAINING in kinds else "An export is"
        answer = QMessageBox.question(
            self,
            "Quit TL Studio?",
            f"{what} still running. Stop it and quit? A stopped training keeps its best weights so far.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def _stop_then_close(self, running: list[workers.WorkerHandle]) -> None:
        """Stop the workers and close once their threads have ended, keeping the window responsive."""
        self._closing_after_stop = True
        self._on_busy("Stopping… the window closes when the current step ends")
        for handle in running:
            handle.finished.connect(self._close_when_idle)
            handle.stop()

    def _close_when_idle(self) -> None:
        if self._closing_after_stop and not self._close_scheduled and not workers.active_workers():
            self._close_scheduled = True
            QTimer.singleShot(0, self._close_after_stop)

    def _close_after_stop(self) -> None:
        self._close_scheduled = False
        if self.isVisible() and not self.close():
            self._on_busy("")

    def _restore_geometry(self) -> None:
        geometry = self.settings.value("main_window/geometry")
        if geometry is not None and self.restoreGeometry(geometry):
            state = self.settings.value("main_window/state")
            if state is not None:
                self.restoreState(state)
        else:
            self.resize(1280, 820)
