"""The ``tlstudio`` command line (see :mod:`tlstudio.cli.entry`)."""

from tlstudio.cli.entry import build_parser, main

__all__ = ["build_parser", "main"]
