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

A trial that would be one too many (``total`` scored before it) first waits for the scored trials
numbered before it that are still running: one of them may yet die. So a worker killed while
scoring the study's last architectures never leaves the study short; the others score its place.

**A worker that dies while scoring** (``kill -9``, the machine lost) leaves its trial RUNNING. Its
process is judged dead by its ``host:pid`` tag (:func:`das.search.study.release_dead_trials`, at the
start of every trial and while waiting) or, on an RDB storage across machines, by Optuna's
heartbeat; the trial is then PRUNED or FAILED *without scores* and no longer holds a place. Its
architecture is **retried**: the next trial any worker starts takes it (:meth:`Ledger.pending_retry`)
before drawing a new one, with the dead trial's params, so the sampler sees the same params again.
A retry is a new trial in the study's numbering, so the rule above still counts exactly. An
architecture whose trial died :data:`MAX_RETRIES` times is left to the sampler (it may be what
kills its worker: out of memory). A trial interrupted by a second Ctrl-C is retried by the next
run the same way.
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
#: States in which a trial has its place: finished, or running in a live process (a FAILED trial
#: only if it failed while its process lived: see :func:`holds_place`).
HELD = (TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING)
#: User attr set on a trial whose objective raised (das.search.study.Interruptible): it failed
#: in a live process, so it keeps its place (a FAIL without it and without scores is a dead worker's).
ERROR = "error"
#: User attr of a trial that retries the architecture of a trial whose worker died (its number).
RETRY_OF = "retry_of"
#: Deaths of one architecture's trials after which it is no longer retried.
MAX_RETRIES = 3
#: Seconds between looks at the study while waiting for another process's trial.
POLL_S = 0.05
#: Seconds between looks while waiting for running scored trials before stopping (they take longer).
SETTLE_POLL_S = 0.25
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


def died_while_scoring(trial: FrozenTrial) -> bool:
    """Whether ``trial`` had claimed its architecture as scored and never finished, not by an error.

    Its worker died (pruned by :func:`das.search.study.release_dead_trials`, failed by an RDB
    heartbeat) or was interrupted by a second Ctrl-C. It may have died after its scores were
    stored and before it was told complete: it still never finished, holds no place, and is
    retried. A trial whose objective raised in a live process is tagged :data:`ERROR` and stays
    failed and counted.
    """
    return (trial.state in (TrialState.PRUNED, TrialState.FAIL) and kind_of(trial) == SCORED
            and ERROR not in trial.user_attrs)


def holds_place(trial: FrozenTrial) -> bool:
    """Whether ``trial`` holds its architecture's place: finished, running, or failed in a live process."""
    return trial.state in HELD and not (trial.state == TrialState.FAIL and died_while_scoring(trial))


@dataclass(frozen=True)
class Retry:
    """An architecture whose scoring trial died, to be scored by the next trial (see the module docstring)."""

    number: int  # the dead trial
    key: str
    arch: str  # its ArchSpec JSON
    params: dict[str, Any]


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
            owner = next((t for t in trials if t.number != trial.number and holds_place(t) and kind_of(t) == SCORED
                          and self.key_of(t) == key), None)
            if owner is not None:
                trial.set_user_attr(KIND, DUPLICATE)
                trial.set_user_attr("duplicate_of", owner.number)
                return Claim(DUPLICATE, owner=owner.number)
            scored = self.scored_keys(lower)
            if self.total is not None and len(scored) >= self.total:
                if any(t.state == TrialState.RUNNING and kind_of(t) == SCORED for t in lower):
                    # One too many unless one of those dies before it finishes: wait and see.
                    time.sleep(SETTLE_POLL_S)
                    if self.release is not None and time.monotonic() - last_release > RELEASE_EVERY_S:
                        self.release(study)
                        last_release = time.monotonic()
                    continue
                return Claim(SURPLUS)
            trial.set_user_attr(KIND, SCORED)
            return Claim(SCORED, last=self.total is not None and len(scored) + 1 >= self.total)

    def full(self, study: optuna.Study) -> bool:
        """Whether the study already holds ``total`` scored architectures (then a new trial need not even sample).

        Only a shortcut, so a process that keeps drawing over-budget candidates notices that the
        others are done; :meth:`claim` alone decides what counts.
        """
        if self.total is None:
            return False
        if self.release is not None:
            self.release(study)  # a dead worker's trial must not keep its place
        trials = study.get_trials(deepcopy=False)
        # Running scored trials may yet die: then this trial is needed (claim waits to see).
        return (len(self.scored_keys(trials)) >= self.total
                and not any(t.state == TrialState.RUNNING and kind_of(t) == SCORED for t in trials))

    def scored_keys(self, trials: list[FrozenTrial]) -> set[str | None]:
        """The distinct architectures the ``trials`` hold a place for as scored."""
        return {self.key_of(t) for t in trials if holds_place(t) and kind_of(t) == SCORED}

    def pending_retry(self, study: optuna.Study) -> Retry | None:
        """The first architecture whose scoring trial died and that no trial holds or is working on, if any."""
        pending = pending_retries(study.get_trials(deepcopy=False), self.key_of)
        return pending[0] if pending else None

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
            if owner.state == TrialState.FAIL and not died_while_scoring(owner):
                return {}  # its objective raised: the architecture has no scores to report
            return None


def pending_retries(trials: list[FrozenTrial], key_of: Callable[[FrozenTrial], str | None]) -> list[Retry]:
    """Architectures whose scoring trial died, that no trial holds or is drawing now, oldest first.

    A key stops being pending as soon as any trial takes it (a retry, or the sampler drawing it
    again) and is given up after :data:`MAX_RETRIES` deaths.
    """
    deaths: dict[str, list[FrozenTrial]] = {}
    taken: set[str | None] = set()
    for t in trials:
        key = key_of(t) if "key" in t.user_attrs or "arch" in t.user_attrs else None
        if key is None:
            continue
        if died_while_scoring(t):
            deaths.setdefault(key, []).append(t)
        elif t.state == TrialState.RUNNING or (holds_place(t) and kind_of(t) in (SCORED, DUPLICATE)):
            taken.add(key)
    pending = [(dead[-1], key) for key, dead in deaths.items() if key not in taken and len(dead) <= MAX_RETRIES]
    return [Retry(t.number, key, t.user_attrs["arch"], dict(t.params)) for t, key in sorted(pending, key=lambda p: p[0].number)]


def tally(study: optuna.Study, key_of: Callable[[FrozenTrial], str | None]) -> Tally:
    """Count the study's finished trials by kind; ``scored`` counts distinct architectures."""
    counts = Tally()
    scored: set[str | None] = set()
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        kind = kind_of(t)
        if kind is None or not holds_place(t):  # a dead worker's trial (RDB heartbeat) counts for nothing
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
