"""The teacher registry: das's own teachers by name (the extension point for new ones).

A registered teacher is a factory called as ``factory(num_classes=...)``; a duplicate name
raises, an unknown one lists the close matches (:class:`das.registry.Registry`). Specs that
name a library model (``timm:``, ``torchvision:``) or a ``package.module:function`` are not
registered: :func:`teachers.create_teacher` dispatches them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import TypeVar, overload

from torch import nn

from das.registry import Registry

__all__ = ["TEACHERS", "Factory", "close_names_hint", "register_teacher", "teacher_names"]

Factory = Callable[..., nn.Module]
F = TypeVar("F", bound=Factory)

TEACHERS: Registry[Factory] = Registry("teacher")
"""Registered teacher factories; each is called as ``factory(num_classes=...)``."""


@overload
def register_teacher(name_or_factory: F) -> F: ...
@overload
def register_teacher(name_or_factory: str | None = None) -> Callable[[F], F]: ...
def register_teacher(name_or_factory: F | str | None = None) -> F | Callable[[F], F]:
    """Register a teacher factory taking ``num_classes``: ``@register_teacher`` or ``@register_teacher("name")``.

    A duplicate name raises ``ValueError``.
    """
    if callable(name_or_factory):
        return TEACHERS.register()(name_or_factory)
    return TEACHERS.register(name_or_factory)


def teacher_names() -> list[str]:
    """The registered teacher names, sorted (timm/torchvision/module specs are not listed)."""
    return TEACHERS.names()


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
