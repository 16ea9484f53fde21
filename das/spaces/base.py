"""The search-space interface.

A space turns an Optuna trial into an :class:`~das.spec.ArchSpec` (define-by-run, so the
objective stays separate from the space) and an ArchSpec into a network. Every space says
whether it is ``finite``; finite spaces also enumerate their members (an exhaustive sampler
needs that). A canonical key lets isomorphic members be scored once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import optuna
from torch import nn

from das.spec import ArchSpec


class SearchSpace:
    """Base class for search spaces; subclasses set ``name`` and implement the methods.

    Attributes:
        name: the registered name, recorded in every spec of the space.
        finite: whether :meth:`enumerate` lists every member (False unless a space says so).
    """

    name: str = ""
    finite: bool = False

    def __init__(self, **space_args: Any) -> None:
        self.space_args = space_args

    def suggest(self, trial: optuna.Trial) -> ArchSpec:
        """Sample one architecture with ``trial.suggest_*``."""
        raise NotImplementedError

    def build(self, spec: ArchSpec, num_classes: int) -> nn.Module:
        """Build the network; it should declare ``feature_points()`` (das infers them from an example otherwise)."""
        raise NotImplementedError

    def enumerate(self) -> Iterator[ArchSpec]:
        """Every architecture of a finite space (``finite`` is True)."""
        raise NotImplementedError(f"space {self.name!r} is not finite")

    def canonical(self, spec: ArchSpec) -> str:
        """A key equal for architectures that compute the same function."""
        return spec.to_json()

    def spec(self, **choices: Any) -> ArchSpec:
        """An ArchSpec of this space with these choices."""
        return ArchSpec.make(self.name, choices, self.space_args)
