"""The search objective: sample a student, check its budget, score it without training."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch

from das.proxies import score
from das.proxies.context import Batch
from das.proxies.diswot import DisWOTReference
from das.proxies.ensemble import EnsembleReference
from das.search.config import BudgetConfig
from das.spaces import SearchSpace
from das.spec import ArchSpec
from das.stats import count_flops, count_params


@dataclass
class Candidate:
    """What the objective learnt about one architecture."""

    spec: ArchSpec
    params: int
    flops: int
    scores: dict[str, float]

    @property
    def attrs(self) -> dict[str, Any]:
        return {"arch": self.spec.to_json(), "params": self.params, "flops": self.flops, "scores": self.scores}


def over_budget(params: int, flops: int, budget: BudgetConfig) -> dict[str, float]:
    """Optuna constraint values: > 0 means over the limit by that much."""
    limits = {"params": (params, budget.max_params), "flops": (flops, budget.max_flops)}
    return {name: float(value - limit) for name, (value, limit) in limits.items() if limit is not None}


@dataclass
class Objective:
    """Callable for ``study.optimize``.

    Isomorphic architectures (equal ``space.canonical``) are scored once and the result reused,
    so the study's budget of trials is not spent twice on the same function.
    """

    space: SearchSpace
    batches: list[Batch]
    teacher: DisWOTReference | None
    proxies: list[str]
    budget: BudgetConfig
    num_classes: int
    input_shape: tuple[int, int, int]
    device: torch.device
    seed: int = 0
    reference: EnsembleReference | None = None
    seen: dict[str, Candidate] = field(default_factory=dict)

    def evaluate(self, spec: ArchSpec) -> Candidate:
        key = self.space.canonical(spec)
        if key in self.seen:
            return self.seen[key]
        model = self.build(spec)
        candidate = Candidate(spec, count_params(model), count_flops(model, self.input_shape), self.score(model, self.proxies))
        self.seen[key] = candidate
        return candidate

    def build(self, spec: ArchSpec) -> torch.nn.Module:
        torch.manual_seed(self.seed)  # the same arch always starts from the same weights
        return spec.build(self.num_classes).to(self.device)

    def score(self, model: torch.nn.Module, proxies: list[str]) -> dict[str, float]:
        """``proxies`` of ``model`` on the study's probe batches (a subset scores as in the full set)."""
        return score(model, self.batches, proxies, teacher=self.teacher, reference=self.reference, seed=self.seed)

    def __call__(self, trial: optuna.Trial) -> float:
        spec = self.space.suggest(trial)
        candidate = self.evaluate(spec)
        for name, value in over_budget(candidate.params, candidate.flops, self.budget).items():
            trial.set_constraint(name, value)
        for key, value in candidate.attrs.items():
            trial.set_user_attr(key, value)
        value = candidate.scores[self.proxies[0]]
        if not math.isfinite(value):
            # Optuna records a non-finite return as a failed trial; say why in the leaderboard.
            trial.set_user_attr("error", f"{self.proxies[0]} is {value}")
        return value
