"""The ``tlstudio`` command line: headless commands over the engine.

``tlstudio COMMAND ...`` runs one step of the workflow (inspect a base model,
scan data, train, predict, export, manage weights) and prints a table, or JSON
with ``--json``. Progress goes to stderr, results to stdout. ``tlstudio``
alone opens the desktop app (see :mod:`tlstudio.__main__`).

The engine is imported inside each command, never at the top: ``--help``,
``--version`` and argument mistakes answer at once, without the seconds
TensorFlow takes to import. A user's mistake (a :class:`UserError` or a bad
argument) prints one line, ``tlstudio: error: ...``, and exits with 2; Ctrl+C
asks long work to stop at its next check, a second Ctrl+C aborts, and either
exits with 130. Anything else is a bug and keeps its traceback.

TensorFlow's C++ start-up lines are hidden unless ``--debug`` is given or the
user set ``TF_CPP_MIN_LOG_LEVEL`` (:mod:`tlstudio.core.spec.tensorflow_load`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback
from typing import Any, Iterator, Sequence

from tlstudio.cli import data, health, machine, network, results, train
from tlstudio.cli.common import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USER_ERROR,
    PROG,
    Parser,
    UsageError,
    print_error,
)
from tlstudio.cli.progress import ProgressRenderer
from tlstudio.core.spec import tensorflow_load
from tlstudio.core.spec.errors import Cancelled, UserError
from tlstudio.core.spec.events import ShouldStop
from tlstudio.core.spec.text import tlstudio_version


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return the exit status.

    ``tlstudio`` with no arguments opens the desktop app; that choice is made
    in :mod:`tlstudio.__main__`, so this module never imports the GUI.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if "--debug" not in arguments:
        tensorflow_load.install_quiet_import()
        os.environ.setdefault(tensorflow_load.LOG_LEVEL_ENV, "2")
    else:
        os.environ.setdefault(tensorflow_load.LOG_LEVEL_ENV, "0")
    _print_any_file_name()
    try:
        args = build_parser().parse_args(arguments)
        progress = ProgressRenderer(quiet=args.quiet)
        with progress, _stop_on_interrupt(progress) as should_stop:
            return args.handler(args, progress, should_stop)
    except SystemExit as exit_request:
        return _exit_code(exit_request.code)
    except (UserError, UsageError) as error:
        if "--debug" in arguments:
            traceback.print_exc()
        print_error(str(error))
        return EXIT_USER_ERROR
    except (Cancelled, KeyboardInterrupt):
        sys.stderr.write(f"\n{PROG}: cancelled\n")
        return EXIT_CANCELLED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: global options and one sub-parser per command."""
    parser = Parser(
        prog=PROG,
        description="TL Studio: build an image classifier by transfer learning. "
        "Run without arguments to open the desktop app.",
        epilog="Example: tlstudio train --data photos/ --base vgg16 --epochs 5",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {tlstudio_version()}")
    commands = parser.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=Parser
    )
    common = Parser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="show no progress, only results and warnings",
    )
    common.add_argument(
        "--debug", action="store_true", help="also print the traceback of errors"
    )
    network.add_inspect(commands, common)
    data.add_data(commands, common)
    train.add_train(commands, common)
    results.add_predict(commands, common)
    results.add_export(commands, common)
    machine.add_weights(commands, common)
    machine.add_cache(commands, common)
    machine.add_devices(commands, common)
    machine.add_doctor(commands, common)
    results.add_runs(commands, common)
    results.add_evaluate(commands, common)
    network.add_explain(commands, common)
    network.add_activations(commands, common)
    network.add_compare_cuts(commands, common)
    health.add_check(commands, common)
    health.add_tune(commands, common)
    health.add_lr_find(commands, common)
    health.add_map(commands, common)
    parser.set_defaults(handler=_no_command, quiet=False, debug=False)
    return parser


def _exit_code(code: Any) -> int:
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_FAILED


def _print_any_file_name() -> None:
    """Let file names that are not valid UTF-8 print (escaped) instead of raising UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def _silence_stdout() -> None:
    """After a closed pipe (``tlstudio data DIR | head``), keep Python from
    complaining again while it flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _no_command(
    args: argparse.Namespace, progress: ProgressRenderer, should_stop: ShouldStop
) -> int:
    raise UsageError(
        "no command given; run 'tlstudio' without arguments to open the app (see 'tlstudio --help')"
    )


@contextlib.contextmanager
def _stop_on_interrupt(progress: ProgressRenderer) -> Iterator[ShouldStop]:
    """Ctrl+C asks the running work to stop at its next check (training keeps
    its best epoch so far); a second Ctrl+C aborts at once."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop.is_set
        return

    def request_stop(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        progress.line("Stopping at the next step; press Ctrl+C again to abort now.")

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield stop.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
