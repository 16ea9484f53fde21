"""The ``grid`` sampler: every distinct member of a finite space once, in the space's own order.

Optuna's GridSampler walks the product of named parameter values, but a space's parameters are
not its architectures: NB201's six edge parameters give 15,625 cells of which 6,466 differ
(isomorphs compute the same function), and a timm space's multipliers can round to one
network. So das walks ``space.enumerate()`` itself, keeps the first member of each
``space.canonical`` class, and gives each trial the first one no trial of the study has taken
yet (any process's: two processes that take the same one at once make the later a duplicate,
which does not count). The trial itself asks Optuna for no parameter.
"""

from __future__ import annotations

import optuna

from das.errors import DasError
from das.spaces import SearchSpace
from das.spec import ArchSpec


class GridSpecs:
    """The distinct members of ``space``, handed out in order to the trials of a study.

    Raises:
        DasError: for a space that is not finite.
    """

    def __init__(self, space: SearchSpace, space_name: str) -> None:
        if not space.finite:
            raise DasError(
                f"study.sampler=grid needs a finite space, and {space_name!r} is not: use tpe, random or nsga2 "
                "(a define-by-run function can say my_space.finite = True when all its params are discrete)"
            )
        members: dict[str, ArchSpec] = {}
        for spec in space.enumerate():
            members.setdefault(space.canonical(spec), spec)
        self.members = members
        self._next = 0

    def __len__(self) -> int:
        return len(self.members)

    def next(self, taken: set[str]) -> tuple[str, ArchSpec] | None:
        """The first member (key, spec) whose key is not in ``taken``; None when every one is."""
        keys = list(self.members)
        while self._next < len(keys) and keys[self._next] in taken:
            self._next += 1
        if self._next == len(keys):
            return None
        key = keys[self._next]
        self._next += 1  # this process never hands it out again, whatever becomes of its trial
        return key, self.members[key]


def taken_keys(study: optuna.Study) -> set[str]:
    """The architecture keys the study's trials have taken so far (any state but pruned)."""
    return {
        t.user_attrs["key"] for t in study.get_trials(deepcopy=False)
        if "key" in t.user_attrs and t.state != optuna.trial.TrialState.PRUNED
    }
