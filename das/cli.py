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
    check_flag_order(argv)
    own = ("-c", "--config", *own_run_flags)
    if any(arg.split("=", 1)[0] in own for arg in argv):
        return list(argv)
    return ["--config", str(quickstart), *argv]


#: Options that are not settings a config file could hold.
_NOT_SETTINGS = ("--config", "-c", "--print_config", "--help", "-h")


def check_flag_order(argv: list[str]) -> None:
    """Refuse a flag placed before a ``--config`` that sets the same key: the config, read later, would silently override it.

    A flag the config does not set keeps its value wherever it stands, so it is left alone.
    """
    for i, arg in enumerate(argv):
        name, eq, inline = arg.partition("=")
        if not name.startswith("--") or name in _NOT_SETTINGS:
            continue
        value = inline if eq else (argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") else "")
        key = name[2:]
        for j in range(i + 1, len(argv)):
            config_name, config_eq, config_inline = argv[j].partition("=")
            if config_name not in ("--config", "-c"):
                continue
            path = config_inline if config_eq else (argv[j + 1] if j + 1 < len(argv) else "")
            if _sets(path, key):
                shown = f"{name} {value}".strip()
                raise DasError(f"{shown} comes before --config {path}, which sets {key} and is read after it, so it would be "
                               f"overridden: put it after --config")


def _sets(path: str, key: str) -> bool:
    """Whether the YAML config at ``path`` sets the dotted ``key`` (or a group above it); False when it cannot be read."""
    import yaml

    try:
        tree = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False  # the parser says what is wrong with it
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


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
