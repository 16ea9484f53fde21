"""``package.module:function``: a user's own callable named by one string (a teacher, a space, ...).

Every registry that takes such a spec (teachers, search spaces) resolves it here, so each of its
mistakes (a malformed spec, a module that cannot be imported, a missing or non-callable name)
is one line naming the spec.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from das.errors import DasError, close_matches_hint

__all__ = ["import_function"]


def import_function(
    module_name: str, attr: str, spec: str, what: str = "teacher", example: str = "my_models.nets:big_cnn",
    expected: str = "a function returning an nn.Module",
) -> Callable[..., Any]:
    """The callable ``attr`` of module ``module_name``, with one-line errors naming ``spec``.

    Args:
        module_name, attr: the two halves of ``spec`` (``package.module:function``).
        spec: the whole spec, for error messages.
        what: what the spec names ("teacher", "space"), for error messages.
        example: a well-formed spec, shown when ``spec`` is malformed.
        expected: what the callable must be, shown when ``attr`` is not callable.
    """
    if not module_name or not attr.isidentifier():
        raise DasError(f"{what} spec {spec!r} is not package.module:function (e.g. {example!r})")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise DasError(f"cannot import {module_name!r} for {what} {spec!r} ({e}); put it on PYTHONPATH") from None
    factory = getattr(module, attr, None)
    if factory is None:
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise DasError(f"module {module_name!r} has no {attr!r} for {what} {spec!r}: {close_matches_hint(attr, public)}")
    if not callable(factory):
        raise DasError(f"{spec!r} is a {type(factory).__name__}, not {expected}")
    return factory
