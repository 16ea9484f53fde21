"""Search spaces of student networks, by name (``create_space("nb201", C=16, N=5)``)."""

from __future__ import annotations

from typing import Any

from das.registry import Registry
from das.spaces.base import SearchSpace

SPACES: Registry[type[SearchSpace]] = Registry("search space")


def register_space(cls: type[SearchSpace]) -> type[SearchSpace]:
    """Class decorator: register a SearchSpace subclass under its ``name``."""
    SPACES.add(cls.name, cls)
    return cls


def create_space(name: str, **space_args: Any) -> SearchSpace:
    return SPACES.get(name)(**space_args)


from das.spaces import nb201, resnet_cifar  # noqa: E402,F401  (registers the built-in spaces)

__all__ = ["SPACES", "SearchSpace", "create_space", "register_space"]
