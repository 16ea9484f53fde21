"""Validation of a space's constructor choices (the lists a user may narrow in config)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from das.errors import DasError


def distinct_positive(owner: str, key: str, values: Any, kind: type, default: Sequence[Any] | None = None) -> tuple:
    """``values`` as a sorted tuple of ``kind``; one clear line when it is not a list of distinct positive numbers.

    ``owner`` names the space in the message (``resnet_cifar``, ``timm space``); ``default`` is shown
    beside it so the user sees what a valid list looks like.
    """
    ok = isinstance(values, Sequence) and not isinstance(values, str) and len(values) > 0
    ok = ok and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0 for v in values)
    if kind is int:
        ok = ok and all(isinstance(v, numbers.Integral) for v in values)
    if not ok or len(set(values)) != len(values):
        what = "positive integers" if kind is int else "positive numbers"
        shown = "" if default is None else f" (default {list(default)})"
        raise DasError(f"{owner} {key} must be a list of distinct {what}, got {values!r}{shown}")
    return tuple(sorted(kind(v) for v in values))
