"""``ensemble``: the AZ-NAS log-rank aggregation of a few fixed proxies, against a reference population.

A rank only exists within a population, so a single network's ensemble score is defined
against a **reference population**: the member scores of R architectures scored once (in a
search, R random members of the space within the budget, saved in the run directory). With
m = R + 1 (the reference plus the candidate), the candidate's score is

    ensemble(a) = Σ_k log(rank_k(a) / m),   rank_k(a) = 1 + position of a's score among the
                                             R reference scores of member k

where the position counts the reference scores below it, ties as ½, and is interpolated
linearly between two neighbouring reference scores so that candidates falling in the same gap
are not tied. The value is ≤ 0 (0: at least as good as every reference network under every
member), and fixed for a given reference, so an Optuna study sees the same value each time the
same architecture comes back. A member score beyond the reference's range is clamped (rank 1 or
m), so a larger reference resolves the extremes better. Over a whole benchmark population the
same rule is :func:`das.report.ranking.log_rank_ensemble` (AZ-NAS's protocol).

The members are :data:`ENSEMBLE_MEMBERS`, fixed once: AZ-NAS's four complementary terms plus
MeCo (feature correlation on real data) and ZiCo (gradient consistency across batches), the two
newer single proxies with the strongest published NAS-Bench-201 figures (docs/decisions.md gives the
reasoning and the check on a disjoint sample). Nothing is fitted and no accuracy enters the score.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from das.errors import DasError
from das.proxies.base import PROXIES, register_proxy
from das.proxies.context import ScoringContext

#: The members, fixed once (see docs/decisions.md, "The ensemble members", for how and why).
ENSEMBLE_MEMBERS: tuple[str, ...] = ("meco", "zico", "az_expressivity", "az_progressivity", "az_trainability", "az_complexity")


@dataclass(frozen=True)
class EnsembleReference:
    """Member scores of a reference population, the yardstick of the ``ensemble`` proxy.

    Attributes:
        members: the member proxies, in order.
        scores: per member, the reference population's finite scores, sorted ascending.
        settings: where the population came from (space, probe, seed), for provenance.
    """

    members: tuple[str, ...]
    scores: Mapping[str, np.ndarray]
    settings: Mapping[str, Any]

    @classmethod
    def from_population(cls, population: Sequence[Mapping[str, float]], members: Sequence[str] = ENSEMBLE_MEMBERS,
                        settings: Mapping[str, Any] | None = None) -> EnsembleReference:
        """Build from one ``{proxy: score}`` dict per reference architecture."""
        if len(population) < 2:
            raise DasError(f"an ensemble reference needs at least 2 scored architectures, got {len(population)}")
        columns: dict[str, np.ndarray] = {}
        for name in members:
            values = np.array([float(s[name]) for s in population if name in s], dtype=float)
            values = np.sort(values[np.isfinite(values)])
            if len(values) < 2:
                raise DasError(f"ensemble member {name!r} has {len(values)} finite scores in the reference population; need at least 2")
            columns[name] = values
        return cls(tuple(members), columns, dict(settings or {}))

    @property
    def size(self) -> int:
        return max(len(v) for v in self.scores.values())

    def rank(self, member: str, value: float) -> float:
        """1 + the interpolated position of ``value`` among the member's reference scores."""
        ref = self.scores[member]
        if not math.isfinite(value):
            return 1.0
        below = float(np.searchsorted(ref, value, side="left"))
        equal = float(np.searchsorted(ref, value, side="right")) - below
        position = below + 0.5 * equal
        if equal == 0 and 0 < below < len(ref):  # strictly inside a gap: interpolate between its ends
            lo, hi = ref[int(below) - 1], ref[int(below)]
            position = below - 0.5 + (value - lo) / (hi - lo)
        return 1.0 + position

    def value(self, member_scores: Mapping[str, float]) -> float:
        """Σ_k log(rank_k / m) for one candidate's member scores."""
        total = 0.0
        for name in self.members:
            m = len(self.scores[name]) + 1
            total += math.log(self.rank(name, float(member_scores[name])) / m)
        return total

    def to_json(self) -> dict[str, Any]:
        return {"members": list(self.members), "scores": {k: v.tolist() for k, v in self.scores.items()},
                "settings": dict(self.settings)}

    def save(self, path: str | Path) -> None:
        tmp = Path(str(path) + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        tmp.replace(path)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> EnsembleReference:
        """The inverse of :meth:`to_json`."""
        return cls(tuple(raw["members"]), {k: np.asarray(v, dtype=float) for k, v in raw["scores"].items()}, raw.get("settings", {}))

    @classmethod
    def load(cls, path: str | Path) -> EnsembleReference:
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DasError(f"cannot read the ensemble reference {path}: {e}") from None


def _member_needs() -> frozenset[str]:
    return frozenset().union(*(PROXIES.get(name).needs for name in ENSEMBLE_MEMBERS))


def _ensemble(ctx: ScoringContext) -> float:
    """Log-rank aggregation of the members' scores against ``ctx.reference``."""
    reference = ctx.reference
    if not isinstance(reference, EnsembleReference):
        raise DasError("proxy 'ensemble' ranks against a reference population; pass reference=EnsembleReference(...) "
                       "(das.search builds one from random members of the space)")
    if tuple(reference.members) != ENSEMBLE_MEMBERS:
        raise DasError(f"the ensemble reference has members {list(reference.members)}; the ensemble uses {list(ENSEMBLE_MEMBERS)}")
    return reference.value({name: ctx.value(name) for name in ENSEMBLE_MEMBERS})


def _register() -> None:
    # The members must be registered first (their needs become the ensemble's needs).
    needs_teacher = any(PROXIES.get(n).needs_teacher for n in ENSEMBLE_MEMBERS)
    min_batches = max(PROXIES.get(n).min_batches for n in ENSEMBLE_MEMBERS)
    register_proxy("ensemble", needs=_member_needs(), needs_teacher=needs_teacher, min_batches=min_batches,
                   needs_reference=True)(_ensemble)


_register()
