"""``tlstudio`` and ``python -m tlstudio``: the desktop app, or a command.

With no arguments the app opens; ``--self-test`` checks the installation
without a screen (:mod:`tlstudio.self_test`); anything else runs the command
line. The choice lives here so that :mod:`tlstudio.cli` never imports the GUI
(an import-linter contract keeps Qt out of the engine and the CLI).
"""

from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Open the app when ``argv`` (default: the process arguments) is empty,
    run the self-test for ``--self-test``, else run the command it names;
    return the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    from tlstudio.core.model.model_files import KerasVersionError, check_keras_version

    try:
        check_keras_version()
    except KerasVersionError as error:
        sys.stderr.write(f"tlstudio: error: {error}\n")
        return 2
    if arguments[:1] == ["--self-test"]:
        from tlstudio.self_test import main as self_test_main

        return self_test_main(arguments[1:])
    if not arguments:
        from tlstudio.gui.app import main as gui_main

        return gui_main([])
    from tlstudio.cli import main as cli_main

    return cli_main(arguments)


if __name__ == "__main__":
    import multiprocessing

    multiprocessing.freeze_support()  # a bundled app starts its worker processes through this entry
    raise SystemExit(main())
