"""The teacher registry: das's own teachers by name (the extension point for new ones).

A registered teacher is a factory called as ``factory(num_classes=...)``; a duplicate name
raises, an unknown one lists the close matches (:class:`das.registry.Registry`). Specs that
name a library model (``timm:``, ``torchvision:``) or a ``package.module:function`` are not
registered: :func:`teachers.create_teacher` dispatches them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, overload

from torch import nn

from das.errors import close_names_hint
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
