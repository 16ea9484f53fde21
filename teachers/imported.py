"""``package.module:function`` teachers and students: any factory returning an ``nn.Module``.

The factory is passed ``num_classes`` when it accepts that argument. A model that declares a
``feature_points()`` method is taken at its word; one that does not gets its points inferred
from an example input (:func:`das.features.infer_feature_points`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from das.errors import DasError
from das.importing import import_function

__all__ = ["import_function", "imported_teacher"]


def imported_teacher(module_name: str, attr: str, num_classes: int, spec: str, what: str = "teacher") -> nn.Module:
    """Import ``module_name``, call its ``attr`` and check that it returned an ``nn.Module``.

    Args:
        module_name: the dotted module path (before the colon of ``spec``).
        attr: the factory's name (after the colon).
        num_classes: passed to the factory when it takes ``num_classes`` (or ``**kwargs``).
        spec: the whole spec, for error messages.
        what: what the network is to the caller (teacher, student), for error messages.
    """
    factory = import_function(module_name, attr, spec, what=what)
    model = factory(num_classes=num_classes) if _accepts_num_classes(factory) else factory()
    if not isinstance(model, nn.Module):
        raise DasError(f"{what} factory {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _accepts_num_classes(factory: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # some builtins and C extensions have no signature
        return False
    return any(p.name == "num_classes" or p.kind is p.VAR_KEYWORD for p in params)
