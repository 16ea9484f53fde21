"""The search-space registry: spaces by name, and ``package.module:function`` for a user's own.

Each built-in space module registers itself here with :func:`register_space`; :mod:`das.spaces`
imports them all, so ``create_space("nb201")`` works once :mod:`das.spaces` is imported.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from das.errors import DasError
from das.registry import Registry
from das.spaces.base import SearchSpace
from das.spec import ArchSpec


class SpaceRegistry(Registry[type[SearchSpace]]):
    """The registry of spaces, which also resolves ``package.module:function`` to a user space."""

    def get(self, name: str) -> type[SearchSpace]:
        if isinstance(name, str) and ":" in name:
            from das.spaces.user import user_space

            return user_space(name)
        try:
            return super().get(name)
        except DasError as err:
            raise DasError(f"{err} (or package.module:function for a define-by-run space of your own)") from None


SPACES = SpaceRegistry("search space")


def register_space(cls: type[SearchSpace]) -> type[SearchSpace]:
    """Class decorator: register a SearchSpace subclass under its ``name``."""
    SPACES.add(cls.name, cls)
    return cls


def create_space(name: str, **space_args: Any) -> SearchSpace:
    return SPACES.get(name)(**space_args)


def build_arch(spec: ArchSpec, num_classes: int) -> nn.Module:
    """The network of ``spec``, built by the space it names (what :meth:`ArchSpec.build` calls)."""
    return create_space(spec.space, **dict(spec.space_args)).build(spec, num_classes)
