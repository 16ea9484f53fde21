"""Search spaces of student networks, by name (``create_space("nb201", C=16, N=5)``).

A name with a colon, ``package.module:function``, is a user's own define-by-run space
(:mod:`das.spaces.user`): the function takes an Optuna trial and returns the network.

Importing this package registers the built-in spaces and makes :meth:`das.spec.ArchSpec.build`
build through them (the spec sits below the spaces, so it is handed the builder, never imports it).
"""

from __future__ import annotations

from das.spaces import nb201, resnet_cifar, timm_space  # noqa: F401  (registers the built-in spaces)
from das.spaces.base import SearchSpace
from das.spaces.registry import SPACES, SpaceRegistry, build_arch, create_space, register_space
from das.spec import set_builder

set_builder(build_arch)

__all__ = ["SPACES", "SearchSpace", "SpaceRegistry", "create_space", "register_space"]
