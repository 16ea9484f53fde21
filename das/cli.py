"""Shared behaviour of the command lines: one-line errors, tracebacks only with --debug."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from collections.abc import Callable

from das.errors import DasError

#: Exit statuses of both commands: 0 success, 1 a user mistake (one line), 130 Ctrl-C (128 + SIGINT).
USER_ERROR = 1
INTERRUPTED = 130


def guarded(main: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Run ``main``; a user mistake (DasError) prints one line and exits 1, Ctrl-C exits 130.

    ``--debug`` anywhere on the command line re-raises instead, for the full traceback.
    """
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    if from_command_line:  # parsers that read sys.argv themselves must not see --debug
        sys.argv = [sys.argv[0], *argv]
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    quiet_lightning()
    try:
        return main(argv)
    except (DasError, MisconfigurationException) as err:  # Lightning's word for a bad Trainer setting
        if debug:
            raise
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: everything written so far is kept; rerun the same command to resume", file=sys.stderr)
        return INTERRUPTED


def with_quickstart(argv: list[str], quickstart: Path, own_run_flags: tuple[str, ...]) -> list[str]:
    """Prepend ``--config quickstart`` unless the command says what it runs on.

    A command naming a config, a dataset or a teacher (any flag in ``own_run_flags``) starts
    from the code's defaults: layering the quickstart under it would silently give it the
    quickstart's image size, space and budget. Anything else is the quickstart, with its flags
    on top (``python search.py --study.trials 10``).
    """
    own = ("-c", "--config", *own_run_flags)
    if any(arg.split("=", 1)[0] in own for arg in argv):
        return list(argv)
    return ["--config", str(quickstart), *argv]


#: Lightning's info lines that advertise its cloud services (print on every Trainer); not das's business.
_ADVERTS = ("💡 Tip:",)
#: Deprecation warnings raised inside Lightning or torch on every run, which a user cannot act on.
_FOREIGN_DEPRECATIONS = (r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",)


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_ADVERTS)


def quiet_lightning() -> None:
    """Drop the noise Lightning prints on every run (its cloud tips, a deprecation inside its own code).

    Lightning's own useful lines (devices, a misconfigured Trainer) are kept. Installed once per
    process by :func:`guarded`, so every command line gets it.
    """
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdverts) for f in logger.filters):
            logger.addFilter(_DropAdverts())
    for message in _FOREIGN_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message)
