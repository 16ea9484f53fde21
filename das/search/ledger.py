"""Which trials count: ``study.trials`` is the number of distinct architectures scored.

Every Optuna trial of a search is tagged (user attr ``kind``) with what it was:

- ``scored``: an architecture within the budget that no earlier trial scored (up to
  ``space.canonical``, so isomorphic cells are one architecture); its proxies ran. Only these
  count towards ``study.trials``;
- ``duplicate``: the same architecture as a scored trial (resampled, or an isomorph): it reports
  that trial's scores, so the sampler learns them, and no proxy runs;
- ``infeasible``: over the budget, rejected before any proxy ran (its size is recorded).

Several processes may share one study. Optuna numbers trials atomically, so the rule "a trial is
``scored`` iff no trial numbered before it scored the same architecture and fewer than
``total`` did" gives exactly ``total`` distinct scored architectures, whatever the number of
processes, provided each trial decides only once every trial numbered before it is tagged.
Tagging takes a sample, a build and a count (well under a second), so a trial waits for the
lower-numbered RUNNING trials still untagged; a process that died meanwhile is released by
:func:`das.search.study.release_dead_trials`, which the wait calls every few seconds. The wait
cannot deadlock: a trial waits only on lower numbers, and a tagged trial waits on nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

KIND = "kind"
SCORED, DUPLICATE, INFEASIBLE, SURPLUS = "scored", "duplicate", "infeasible", "surplus"
#: States in which a trial has its place: finished, or running in a live process.
HELD = (TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING)
#: Seconds between looks at the study while waiting for another process's trial.
POLL_S = 0.05
#: Seconds between releases of dead processes' trials while waiting.
RELEASE_EVERY_S = 2.0


def kind_of(trial: FrozenTrial) -> str | None:
    """The trial's tag; a trial of an older das (no tag, but scores) was scored, or infeasible if over budget."""
    kind = trial.user_attrs.get(KIND)
    if kind is not None:
        return kind
    if "scores" in trial.user_attrs:
        return INFEASIBLE if any(c > 0 for c in trial.constraints.values()) else SCORED
    return None


@dataclass(frozen=True)
class Claim:
    """What the ledger decided for one trial.

    Attributes:
        kind: ``scored``, ``duplicate`` or ``surplus`` (the study already has its ``total``).
        owner: for a duplicate, the trial that scores the architecture.
        last: for a scored trial, whether it is the study's ``total``-th (nothing after it counts).
    """

    kind: str
    owner: int | None = None
    last: bool = False


@dataclass
class Tally:
    """How a study's trials were spent (see the module docstring)."""

    trials: int = 0
    scored: int = 0
    duplicates: int = 0
    infeasible: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"trials": self.trials, "scored": self.scored, "duplicates": self.duplicates, "infeasible": self.infeasible}


class Ledger:
    """Decides, for each new architecture within the budget, whether it is scored, a duplicate or surplus.

    Args:
        total: how many distinct architectures the study scores (None: no limit).
        key_of: the architecture key of a stored trial (``space.canonical`` of its spec).
        release: called every few seconds while waiting: releases trials of dead processes.
    """

    def __init__(self, total: int | None, key_of: Callable[[FrozenTrial], str | None],
                 release: Callable[[optuna.Study], Any] | None = None) -> None:
        self.total = total
        self.key_of = key_of
        self.release = release

    def claim(self, trial: optuna.Trial, key: str) -> Claim:
        """Tag ``trial`` (an in-budget architecture with key ``key``) as scored or duplicate, or say it is surplus."""
        study = trial.study
        last_release = time.monotonic()
        while True:
            trials = study.get_trials(deepcopy=False)
            lower = [t for t in trials if t.number < trial.number]
            if any(t.state == TrialState.RUNNING and kind_of(t) is None for t in lower):
                time.sleep(POLL_S)
                if self.release is not None and time.monotonic() - last_release > RELEASE_EVERY_S:
                    self.release(study)
                    last_release = time.monotonic()
                continue
            owner = next((t for t in trials if t.number != trial.number and t.state in HELD and kind_of(t) == SCORED
                          and self.key_of(t) == key), None)
            if owner is not None:
                trial.set_user_attr(KIND, DUPLICATE)
                trial.set_user_attr("duplicate_of", owner.number)
                return Claim(DUPLICATE, owner=owner.number)
            scored = self.scored_keys(lower)
            if self.total is not None and len(scored) >= self.total:
                return Claim(SURPLUS)
            trial.set_user_attr(KIND, SCORED)
            return Claim(SCORED, last=self.total is not None and len(scored) + 1 >= self.total)

    def full(self, study: optuna.Study) -> bool:
        """Whether the study already holds ``total`` scored architectures (then a new trial need not even sample).

        Only a shortcut, so a process that keeps drawing over-budget candidates notices that the
        others are done; :meth:`claim` alone decides what counts.
        """
        return self.total is not None and len(self.scored_keys(study.get_trials(deepcopy=False))) >= self.total

    def scored_keys(self, trials: list[FrozenTrial]) -> set[str | None]:
        """The distinct architectures the ``trials`` hold a place for as scored."""
        return {self.key_of(t) for t in trials if t.state in HELD and kind_of(t) == SCORED}

    def owner_scores(self, study: optuna.Study, number: int) -> dict[str, float] | None:
        """The scores of trial ``number`` once it has finished; None if it never will (its process died, Ctrl-C)."""
        last_release = time.monotonic()
        while True:
            owner = study.get_trials(deepcopy=False)[number]
            if owner.state == TrialState.RUNNING:
                time.sleep(POLL_S)
                if self.release is not None and time.monotonic() - last_release > RELEASE_EVERY_S:
                    self.release(study)
                    last_release = time.monotonic()
                continue
            if owner.state in (TrialState.COMPLETE, TrialState.FAIL) and "scores" in owner.user_attrs:
                return dict(owner.user_attrs["scores"])
            if owner.state == TrialState.FAIL:
                return {}
            return None


def tally(study: optuna.Study, key_of: Callable[[FrozenTrial], str | None]) -> Tally:
    """Count the study's finished trials by kind; ``scored`` counts distinct architectures."""
    counts = Tally()
    scored: set[str | None] = set()
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        kind = kind_of(t)
        if kind is None:
            continue
        counts.trials += 1
        if kind == SCORED:
            key = key_of(t)
            if key in scored:  # two trials of an older das on one architecture
                counts.duplicates += 1
            scored.add(key)
        elif kind == DUPLICATE:
            counts.duplicates += 1
        elif kind == INFEASIBLE:
            counts.infeasible += 1
    counts.scored = len(scored)
    return counts
