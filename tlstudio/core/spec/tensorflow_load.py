"""Loading TensorFlow: quietly, and without starving other threads.

Two things go wrong when TensorFlow is imported as it comes:

* Its C++ start-up writes log lines straight to the process's standard
  error (``oneDNN custom operations are on``, ``Could not find cuda
  drivers``, ``failed call to cuInit``), which ``TF_CPP_MIN_LOG_LEVEL`` no
  longer silences since TensorFlow logs through absl before absl is set up.
  :func:`quiet_native_logs` sends file descriptor 2 to a temporary file for
  the import and writes back every line that is not such a log line (all of
  them if the import fails). :func:`install_quiet_import` does it for the
  first ``import tensorflow`` wherever it happens (the CLI), unless the user
  set ``TF_CPP_MIN_LOG_LEVEL`` or asked for ``--debug``.
* Python loads an extension module with ``dlopen`` while holding the
  interpreter lock; TensorFlow's native libraries take about half a second
  to load and link, during which no other thread (the GUI's) runs.
  :func:`preload_native_libraries` loads them first through a ``ctypes``
  call, which releases the lock, so the later ``import`` finds them loaded.
* The import creates millions of Python objects, and each full collection of
  Python's cyclic garbage collector meanwhile walks all of them holding the
  lock: five collections of 50 to 120 ms each, the longest stalls of the
  window while TensorFlow loads. :func:`collections_deferred` holds the
  collector off during the load and then freezes what it loaded (modules
  live as long as the process), so later collections skip it too.

Nothing here imports TensorFlow at module level.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Iterator

LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
NATIVE_LIBRARIES = (
    "python/platform/_pywrap_cpu_feature_guard.so",
    "python/_pywrap_tensorflow_internal.so",
)
"""TensorFlow's slowest shared objects to load, relative to its package (they pull in
``libtensorflow_framework`` and ``libtensorflow_cc``)."""

_NATIVE_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] "  # absl: I0000 00:00:17.5  123 file.cc:31] ...
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] \S+:\d+\] "  # TensorFlow's own: 2024-01-01 ...: I file.cc:31]
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|INFO: Created TensorFlow Lite \S+ delegate for "  # TFLite's interpreter, when it allocates tensors
    rb"|fully_quantize: \d+, inference_type: )"  # the TFLite converter's quantizer
)

_CONTINUATION = re.compile(rb"^To enable the following instructions: ")


def is_native_log_line(line: bytes) -> bool:
    """Whether ``line`` is one of TensorFlow's C++ log lines (absl or TensorFlow format)."""
    return bool(_NATIVE_LINE.match(line))


def without_native_logs(lines: list[bytes]) -> list[bytes]:
    """``lines`` less TensorFlow's C++ log lines and the lines that continue them.

    A native message may span lines: a known continuation (``To enable the
    following instructions: ...``) right after a native line goes with it;
    any other line is kept.
    """
    kept: list[bytes] = []
    after_native = False
    for line in lines:
        if is_native_log_line(line) or (after_native and _CONTINUATION.match(line)):
            after_native = True
        else:
            after_native = False
            kept.append(line)
    return kept


def user_wants_native_logs() -> bool:
    """The user set ``TF_CPP_MIN_LOG_LEVEL`` themselves: their choice stands."""
    return LOG_LEVEL_ENV in os.environ


def quietly() -> contextlib.AbstractContextManager[None]:
    """:func:`quiet_native_logs`, unless ``TF_CPP_MIN_LOG_LEVEL`` asks for C++ information or warnings
    (0 or 1; ``tlstudio --debug`` sets 0): the app's TensorFlow load, the TFLite converter and interpreter."""
    asked = os.environ.get(LOG_LEVEL_ENV, "").strip() in ("0", "1")
    return contextlib.nullcontext() if asked else quiet_native_logs()


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Hide TensorFlow's C++ log lines written to file descriptor 2 inside the block.

    Everything else written to descriptor 2 meanwhile (Python warnings, our own
    progress) is written back when the block ends; if the block raises, all of
    it is, so a failed import still explains itself.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 (a windowed app): nothing to hide
        yield
        return
    failed = True
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            with contextlib.suppress(ValueError, OSError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().splitlines(keepends=True)
            kept = lines if failed else without_native_logs(lines)
            if kept:
                with contextlib.suppress(OSError):
                    os.write(2, b"".join(kept))


def preload_native_libraries() -> list[str]:
    """Load TensorFlow's largest shared objects without holding the interpreter lock.

    A ``ctypes`` call into ``dlopen`` releases the lock (Python's own import
    does not); the objects stay loaded, so ``import tensorflow`` later only
    initialises them. Returns the paths loaded; on systems without ``dlopen``
    or without TensorFlow, loads nothing.
    """
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations or not sys.platform.startswith("linux"):
        return []
    import ctypes

    libc = ctypes.CDLL(None)
    libc.dlopen.restype = ctypes.c_void_p
    libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    package = Path(list(spec.submodule_search_locations)[0])
    loaded = []
    for relative in NATIVE_LIBRARIES:
        path = package / relative
        if path.is_file() and libc.dlopen(os.fsencode(path), os.RTLD_NOW):
            loaded.append(str(path))
    return loaded


@contextlib.contextmanager
def collections_deferred() -> Iterator[None]:
    """No automatic garbage collection inside the block; what exists at its end is frozen (``gc.freeze``).

    For loading large libraries: their objects are never garbage, and
    collecting while they load only walks them again and again.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def import_tensorflow(quiet: bool = True):
    """Import TensorFlow (its native libraries first, see :func:`preload_native_libraries`).

    With ``quiet`` (and ``TF_CPP_MIN_LOG_LEVEL`` not set by the user) its C++
    start-up lines are hidden. Returns the module.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    context = quiet_native_logs() if quiet and not user_wants_native_logs() else contextlib.nullcontext()
    with context, collections_deferred():
        preload_native_libraries()  # its static initialisers log too
        import tensorflow

        _find_devices(tensorflow)
    return tensorflow


def _find_devices(tensorflow) -> None:
    """Let TensorFlow look for its devices now, where its C++ lines about them (``failed call to
    cuInit``) can be hidden, rather than at the first operation."""
    with contextlib.suppress(Exception):
        tensorflow.config.list_physical_devices()


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of ``tensorflow`` inside :func:`quiet_native_logs`."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with quiet_native_logs(), collections_deferred():
            preload_native_libraries()
            self._loader.exec_module(module)
            _find_devices(module)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, giving it a :class:`_QuietLoader`, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        uninstall_quiet_import()
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


_finder = _QuietTensorFlowFinder()


def install_quiet_import() -> bool:
    """Hide TensorFlow's C++ start-up lines whenever it is first imported.

    Does nothing (and returns False) if TensorFlow is already imported or the
    user set ``TF_CPP_MIN_LOG_LEVEL``.
    """
    if "tensorflow" in sys.modules or user_wants_native_logs():
        return False
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    return True


def uninstall_quiet_import() -> None:
    """Undo :func:`install_quiet_import`."""
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_finder)
