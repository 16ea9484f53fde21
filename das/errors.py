"""User-facing errors.

A ``DasError`` is a mistake the user can fix (a bad name, a missing file, an impossible budget).
The command lines print its message on one line and exit with status 1; a traceback is shown
only with ``--debug``. Anything else that escapes is a bug in das and keeps its traceback.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

# How PyTorch's DataLoader hands a worker's exception back: it rebuilds the same class from one
# string, "Caught NAME in DataLoader worker process N.\nOriginal Traceback ...", whose last line
# is "module.NAME: the message" (torch._utils.ExceptionWrapper.reraise).
_FROM_WORKER = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


class DasError(Exception):
    """A one-line, actionable error caused by user input.

    Raised inside a DataLoader worker (an unreadable image in a streamed dataset), it reaches the
    main process rebuilt from the worker's traceback text; only its own message is kept, so the
    command lines still print one line.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str) and _FROM_WORKER.match(args[0]):
            last = args[0].rstrip().rsplit("\n", 1)[-1]
            args = (last.split(": ", 1)[1] if ": " in last else last,)
        super().__init__(*args)


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
