"""Shared behaviour of the command lines: one-line errors, tracebacks only with --debug."""

from __future__ import annotations

import sys
from collections.abc import Callable

from das.errors import DasError


def guarded(main: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Run ``main``; a user mistake (DasError) prints one line and exits 2.

    ``--debug`` anywhere on the command line re-raises instead, for the full traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    try:
        return main(argv)
    except DasError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: everything written so far is kept; rerun the same command to resume", file=sys.stderr)
        return 130
