"""The search's trial objective: sample a student, check its budget, and only then score it without training.

One trial, in order of cost:

1. sample an architecture (the space's ``suggest``, or the grid's next member) and key it by
   ``space.canonical``; an architecture this process has seen already costs nothing more;
2. its parameters, counted on the meta device (no memory, no initialisation) when there is a
   params budget, then FLOPs on the real network, then, with ``budget.max_latency_ms``, the
   median of a few timed forward passes: each only if the limits before it are met. Over a
   limit, the trial is recorded as infeasible (``trial.set_constraint`` > 0, so TPE and NSGA-II
   learn the budget; ``infeasible: true`` and its size in the user attrs) and no proxy runs;
3. the :class:`~das.search.ledger.Ledger` decides whether the architecture is new (scored: the
   proxies run, and it uses up one of ``study.trials``), already scored (duplicate: that score is
   reported again, no proxy runs) or one too many (surplus: the trial is pruned, the study stops).

Before step 1, an architecture whose scoring trial died with its worker (a ``kill -9``, a lost
machine) is taken instead of a new draw, with the dead trial's params (see
:mod:`das.search.ledger`): a crash never leaves an architecture half scored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch

from das.proxies import score
from das.proxies.context import Batch
from das.proxies.diswot import DisWOTReference
from das.proxies.ensemble import EnsembleReference
from das.search.config import BudgetConfig
from das.search.directions import directions as directions_of
from das.search.directions import worst
from das.search.grid import GridSpecs, taken_keys
from das.search.ledger import DUPLICATE, INFEASIBLE, KIND, RETRY_OF, SURPLUS, Ledger, Retry
from das.search.study import SearchSampler
from das.spaces import SearchSpace
from das.spec import ArchSpec
from das.stats import count_flops, count_params, forward_latency_ms, meta_params

#: Trials in a row of one process that find no new architecture within the budget before it
#: stops: the space is exhausted, or the budget leaves almost nothing.
STALL_TRIALS = 200
#: After this many such trials a finite space is checked for being fully seen (an exact stop).
EXHAUSTION_CHECK_AFTER = 20


@dataclass
class Candidate:
    """What the objective learnt about one architecture (its size always; scores only if within budget)."""

    spec: ArchSpec
    params: int
    flops: int | None
    scores: dict[str, float]
    latency_ms: float | None = None
    feasible: bool = True

    @property
    def attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {"arch": self.spec.to_json(), "params": self.params, "flops": self.flops}
        if self.latency_ms is not None:
            attrs["latency_ms"] = self.latency_ms
        if self.feasible:
            attrs["scores"] = self.scores
        else:
            attrs["infeasible"] = True
        return attrs


def over_budget(params: int | None, flops: int | None, budget: BudgetConfig, latency_ms: float | None = None) -> dict[str, float]:
    """Optuna constraint values, relative to each limit (value / limit − 1; > 0 is over by that fraction).

    Relative, so that the violations of different limits add up meaningfully (TPE and NSGA-II
    rank infeasible trials by their sum). A size that was not measured (FLOPs of a candidate
    already over its params budget) has no constraint.
    """
    limits = (("params", params, budget.max_params), ("flops", flops, budget.max_flops),
              ("latency_ms", latency_ms, budget.max_latency_ms))
    return {name: float(value) / float(limit) - 1.0 for name, value, limit in limits if limit is not None and value is not None}


@dataclass
class TrialObjective:
    """Callable for ``study.optimize``; returns the objective value(s) of one trial.

    Also the scorer of candidates outside a trial (``build`` and ``score``: a resume's missing
    proxies, the calibration's students), so they are scored exactly as a trial scores them.

    Isomorphic architectures (equal ``space.canonical``) are one architecture: scored once, the
    score reused without calling a proxy (see the module docstring).

    Args:
        objectives: the proxies the study optimises, in order (default: the first of ``proxies``);
            every one must be in ``proxies``.
        ledger: decides which trials count (default: no limit, one study in this process).
        grid: hand out the members of a finite space in order instead of sampling.
        derived: objectives computed from the proxies' scores rather than by a proxy (a
            calibration's fitted ``selection``): name → function of one candidate's scores,
            stored beside them so the leaderboard and other workers read them like a proxy's.
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
    objectives: list[str] | None = None
    ledger: Ledger | None = None
    grid: GridSpecs | None = None
    derived: dict[str, Callable[[Mapping[str, float]], float]] = field(default_factory=dict)
    seen: dict[str, Candidate] = field(default_factory=dict)
    #: Why this process stopped the study early (space exhausted, grid done), else None.
    stopped: str | None = None
    #: Trials of this process in a row that found no new in-budget architecture.
    stalled: int = 0

    def __post_init__(self) -> None:
        self.objectives = list(self.objectives or self.proxies[:1])
        self.directions = directions_of(self.objectives)
        if self.ledger is None:
            self.ledger = Ledger(None, lambda t: t.user_attrs.get("key"))
        self._space_keys: int | None = None

    # ------------------------------------------------------------------ building and scoring

    def build(self, spec: ArchSpec) -> torch.nn.Module:
        torch.manual_seed(self.seed)  # the same arch always starts from the same weights
        return spec.build(self.num_classes).to(self.device)

    def score(self, model: torch.nn.Module, proxies: list[str], flops: int | None = None) -> dict[str, float]:
        """``proxies`` of ``model`` on the study's probe batches (a subset scores as in the full set), and the derived objectives."""
        scores = score(model, self.batches, proxies, teacher=self.teacher, reference=self.reference, seed=self.seed, flops=flops)
        if set(proxies) >= set(self.proxies):  # a full scoring; a resume's missing proxies alone derive nothing
            scores.update({name: fn(scores) for name, fn in self.derived.items()})
        return scores

    def measure(self, spec: ArchSpec) -> tuple[Candidate, torch.nn.Module | None]:
        """The candidate's size, cheapest first, stopping at the first limit it is over; the built model if within budget."""
        budget = self.budget
        if budget.max_params is not None:
            params = meta_params(lambda: spec.build(self.num_classes))
            if params is not None and params > budget.max_params:
                return Candidate(spec, params, None, {}, feasible=False), None
        model = self.build(spec)
        params, flops = count_params(model), count_flops(model, self.input_shape)
        if any(v > 0 for v in over_budget(params, flops, budget).values()):
            return Candidate(spec, params, flops, {}, feasible=False), None
        latency = None
        if budget.max_latency_ms is not None:
            latency = forward_latency_ms(model, self.batches[0][0])
            if latency > budget.max_latency_ms:
                return Candidate(spec, params, flops, {}, latency_ms=latency, feasible=False), None
        return Candidate(spec, params, flops, {}, latency_ms=latency), model

    def evaluate(self, spec: ArchSpec) -> Candidate:
        """The architecture's candidate, measured and (within budget) scored once per ``space.canonical`` key."""
        key = self.space.canonical(spec)
        if key not in self.seen or (self.seen[key].feasible and not self.seen[key].scores):
            candidate, model = self.measure(spec)
            if model is not None:
                candidate.scores = self.score(model, self.proxies, flops=candidate.flops)
            self.seen[key] = candidate
        return self.seen[key]

    # ------------------------------------------------------------------ one trial

    def next_spec(self, trial: optuna.Trial) -> tuple[str, ArchSpec] | None:
        """The trial's architecture and key: the grid's next member, or the space's sample."""
        if self.grid is not None:
            return self.grid.next(taken_keys(trial.study))
        spec = self.space.suggest(trial)
        return self.space.canonical(spec), spec

    def retried_spec(self, trial: optuna.Trial, retry: Retry) -> tuple[str, ArchSpec]:
        """The dead trial's architecture for ``trial``, drawn through the space with its params fixed.

        Drawing it through ``space.suggest`` records the same params on the new trial, so TPE and
        NSGA-II learn from it like any trial (the study's :class:`~das.search.study.SearchSampler`
        replays them). The grid asks for no params; and on a study opened with another sampler,
        the spec is rebuilt from its JSON and the trial has no params.
        """
        trial.set_user_attr(RETRY_OF, retry.number)
        sampler = trial.study.sampler
        if self.grid is None and retry.params and isinstance(sampler, SearchSampler):
            sampler.replay(trial, retry.params)
            spec = self.space.suggest(trial)
        else:
            spec = ArchSpec.from_json(retry.arch)
        return self.space.canonical(spec), spec

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        if self.ledger.full(trial.study):  # other processes scored the rest meanwhile
            trial.study.stop()
            raise optuna.TrialPruned("the study already has its trials")
        retry = self.ledger.pending_retry(trial.study)
        drawn = self.retried_spec(trial, retry) if retry is not None else self.next_spec(trial)
        if drawn is None:  # the grid has handed out every member
            self.stopped = f"grid: all {len(self.grid or ())} distinct architectures of the space are visited"
            trial.study.stop()
            raise optuna.TrialPruned("the grid is exhausted")
        key, spec = drawn
        trial.set_user_attr("key", key)
        known = self.seen.get(key)
        model = None
        if known is None or (known.feasible and not known.scores):
            known, model = self.measure(spec)
            if not known.feasible:
                self.seen[key] = known
        for name, value in over_budget(known.params, known.flops, self.budget, known.latency_ms).items():
            trial.set_constraint(name, value)
        for name, value in {**known.attrs, "arch": spec.to_json()}.items():
            if name != "scores":
                trial.set_user_attr(name, value)
        if not known.feasible:
            trial.set_user_attr(KIND, INFEASIBLE)
            self._stall(trial)
            return self._values({}, scored=False)
        while True:
            claim = self.ledger.claim(trial, key)
            if claim.kind == SURPLUS:
                trial.study.stop()
                raise optuna.TrialPruned("the study already has its trials")
            if claim.kind == DUPLICATE:
                scores = self.seen[key].scores if key in self.seen and self.seen[key].scores else None
                if scores is None:
                    scores = self.ledger.owner_scores(trial.study, claim.owner)
                    if scores is None:  # its process died or was interrupted before scoring: decide again
                        continue
                    if scores:
                        self.seen[key] = Candidate(spec, known.params, known.flops, scores, known.latency_ms)
                self._stall(trial)
                break
            if not known.scores:  # (a candidate this process scored outside a trial keeps its scores)
                model = model if model is not None else self.build(spec)
                known.scores = self.score(model, self.proxies, flops=known.flops)
            self.seen[key] = known
            scores = known.scores
            self.stalled = 0
            if claim.last:
                trial.study.stop()
            break
        trial.set_user_attr("scores", scores)
        return self._values(scores, scored=True)

    def _values(self, scores: dict[str, float], scored: bool) -> float | tuple[float, ...]:
        """The value(s) Optuna records: the objectives' scores, the worst there is for an unscored trial.

        A scored objective that is not finite (or missing: another process's trial that failed)
        is NaN, which Optuna records as a failed trial.
        """
        values = []
        for name, direction in zip(self.objectives, self.directions):
            value = scores.get(name, math.nan) if scored else worst(direction)
            values.append(float(value) if (not scored or math.isfinite(value)) else math.nan)
        return values[0] if len(values) == 1 else tuple(values)

    def _stall(self, trial: optuna.Trial) -> None:
        """Count a trial that found nothing new; stop the study when the space looks exhausted."""
        self.stalled += 1
        if self.grid is not None or self.stalled < EXHAUSTION_CHECK_AFTER:
            return
        if self.space.finite and self._space_keys is None:
            self._space_keys = len({self.space.canonical(s) for s in self.space.enumerate()})
        seen = taken_keys(trial.study) | set(self.seen)
        within = len(self.ledger.scored_keys(trial.study.get_trials(deepcopy=False)))
        if self.space.finite and len(seen) >= self._space_keys:
            self.stopped = (f"every one of the {self._space_keys} distinct architectures of the space is seen, "
                            f"{within} of them within the budget")
        elif self.stalled >= STALL_TRIALS:
            of = f" of the space's {self._space_keys}" if self._space_keys is not None else ""
            self.stopped = (f"the last {self.stalled} trials found no new architecture within the budget "
                            f"({len(seen)} distinct architectures seen{of}, {within} within the budget)")
        if self.stopped:
            trial.study.stop()
