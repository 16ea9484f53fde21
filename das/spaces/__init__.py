"""Search spaces of student networks, by name (``create_space("nb201", C=16, N=5)``).

A name with a colon, ``package.module:function``, is a user's own define-by-run space
(:mod:`das.spaces.user`): the function takes an Optuna trial and returns the network.
"""

from __future__ import annotations

from typing import Any

from das.errors import DasError
from das.registry import Registry
from das.spaces.base import SearchSpace


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


from das.spaces import nb201, resnet_cifar, timm_space  # noqa: E402,F401  (registers the built-in spaces)

__all__ = ["SPACES", "SearchSpace", "SpaceRegistry", "create_space", "register_space"]
