"""User-facing errors.

A ``DasError`` is a mistake the user can fix (a bad name, a missing file, an impossible budget).
The command lines print its message on one line and exit with status 1; a traceback is shown
only with ``--debug``. Anything else that escapes is a bug in das and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DasError(Exception):
    """A one-line, actionable error caused by user input."""


def close_matches_hint(name: str, choices: Iterable[str]) -> str:
    """Say which known names look like ``name``, or list them all when none do."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "known: " + ", ".join(choices) if choices else "nothing is registered"


def close_names_hint(name: str, choices: Iterable[str], lister: str) -> str:
    """Close matches among a library's many names (timm has over a thousand), never the whole list.

    Args:
        name: the unknown name.
        choices: the library's names.
        lister: the call that lists them, named when nothing is close.
    """
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return f"{lister} lists the known names"
