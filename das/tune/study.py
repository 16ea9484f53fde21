"""The recipe study: an Optuna study in ``RUN/tune/study.journal`` that survives kill -9 and may be shared by several processes.

Storage and sharing are search.py's (das.storage, das.search.study, das.search.locks):

- the journal file is locked with ``flock`` (das.storage), so a process killed while it writes
  releases the lock with its file descriptors and the next process goes on at once; a trial is in
  the journal, finished, the moment Optuna is told its result, so a kill at any later point loses
  nothing finished;
- each trial is tagged with its process (``host:pid``) the moment it is created
  (:class:`das.search.study.SearchSampler`); a trial left RUNNING by a process that died is
  recorded as PRUNED without an outcome (:func:`das.search.study.release_dead_trials`), so it no
  longer counts and its place is run again;
- the study is asked for a trial only under an exclusive lock on ``RUN/tune/study.lock`` after
  counting the finished and running trials, so any number of processes together run exactly
  ``tune.trials`` (a process that finds the rest running waits for them, and takes over the place
  of one whose process dies).

A trial counts once it has an outcome: ``complete`` (its validation accuracy after ``tune.epochs``
is its value), ``pruned`` (stopped by the pruner after an epoch) or ``diverged`` (its loss became
NaN or infinite; recorded PRUNED so TPE ranks it below every finished trial and it is never
chosen). A trial that raised, or that Ctrl-C interrupted, has none and is run again by the next
process. The configured recipe is enqueued as the first trial when the ranges hold it (again if
its process died), so the default is judged beside the recipes the sampler draws; ``tune.anchors``
follow it as fixed trials in the order given, then up to ``tune.refine`` trials that bisect the
cosine scale around the best of them (:func:`refine_candidate`), and only then does TPE draw.
Fixed and refinement trials are never pruned: the guard compares against the configured one, and
an anchor or a refinement is a point of a line the study is meant to see whole.

A study holding trials is read back only under the settings it was run with
(:meth:`RecipeStudy.check_settings`): changing a range, the data or the schedule in the same run
directory is refused, not mixed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from das.calibrate.results import flatten
from das.errors import DasError
from das.search.locks import exclusive
from das.search.study import SearchSampler, release_dead_trials, worker_id
from das.storage import journal_storage
from das.tune.config import TuneConfig
from das.tune.space import RecipeSpace, describe, significant
from das.tune.trials import ShortRuns

TUNE_DIR = "tune"
JOURNAL = "study.journal"
LOCK = "study.lock"
STUDY_NAME = "recipe"
#: User attrs of a trial: how it ended (it counts once set), its recipe, its cost, whether it is the configured recipe.
OUTCOME, RECIPE, SECONDS, CONFIGURED = "outcome", "recipe", "seconds", "configured"
#: User attr of an anchor trial: its cosine scale (tune.anchors).
ANCHOR = "anchor"
#: User attr of a refinement trial: its cosine scale (tune.refine).
REFINE = "refine"
#: A refinement midpoint closer than this factor to a scale already tried is not run: three
#: bisections of a decade (scales 1.33 apart) are run, a fourth (1.15) is not. A design choice, not
#: a measurement: on R1 neighbouring scales that close scored within 0.5 point in 5-epoch trials.
REFINE_MIN_RATIO = 1.2
COMPLETE, PRUNED, DIVERGED = "complete", "pruned", "diverged"
#: Study user attr prefix: each process's seconds spent caching the teacher's outputs.
CACHE_SECONDS = "cache_seconds:"
#: States of a trial that is still to finish.
PENDING = (TrialState.WAITING, TrialState.RUNNING)
#: Seconds between looks at the study while other processes run its last trials.
POLL_S = 0.5
#: Trials the median pruner lets finish before it compares (Optuna's MedianPruner n_startup_trials).
PRUNER_STARTUP = 3


def counted(trial: FrozenTrial) -> bool:
    """Whether ``trial`` has finished with an outcome (a released dead process's trial has none)."""
    outcome = trial.user_attrs.get(OUTCOME)
    return (trial.state == TrialState.COMPLETE and outcome == COMPLETE) or (trial.state == TrialState.PRUNED and outcome in (PRUNED, DIVERGED))


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP, n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def next_fixed(fixed: list[tuple[dict[str, Any], dict[str, Any]]], trials: list[FrozenTrial]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The first fixed trial (its user attrs and params) that no finished or pending trial holds yet, in order."""
    for attrs, params in fixed:
        key, value = next(iter(attrs.items()))
        if not any(t.user_attrs.get(key) == value and (counted(t) or t.state in PENDING) for t in trials):
            return attrs, params
    return None


def refine_candidate(line: dict[float, float | None], min_ratio: float = REFINE_MIN_RATIO) -> float | None:
    """The next cosine scale to try on the configured recipe's line, or None when none is worth a trial.

    ``line`` maps each scale > 0 tried with the rest of the recipe as configured (trial 0, the
    anchors, earlier refinements) to its validation accuracy, or None while it runs or when it
    ended without one. The candidate is the geometric midpoint between the best-scoring scale and
    its better-scoring neighbour on the line (the other neighbour when that midpoint is within
    ``min_ratio`` of a scale already tried), 4 significant digits. It never extrapolates past the
    line's ends: the anchors span the range by design. Ties: the smaller scale, the left neighbour.
    """
    scored = {s: v for s, v in line.items() if v is not None}
    if len(line) < 2 or not scored:
        return None
    scales = sorted(line)
    best = max(scored, key=lambda s: (scored[s], -s))
    i = scales.index(best)
    neighbours = [scales[j] for j in (i - 1, i + 1) if 0 <= j < len(scales)]
    neighbours.sort(key=lambda s: -scored.get(s, -math.inf))  # stable: the left one first on a tie
    for other in neighbours:
        mid = significant(math.sqrt(best * other))
        if all(max(mid / s, s / mid) >= min_ratio for s in scales):
            return mid
    return None


def line_of(trials: list[FrozenTrial], configured_scale: float | None) -> dict[float, float | None]:
    """The scales of the configured recipe's line among ``trials`` (finished or pending) and their accuracies."""
    line: dict[float, float | None] = {}
    for t in trials:
        if not (counted(t) or t.state in PENDING):
            continue
        a = t.user_attrs
        scale = a.get(REFINE) if REFINE in a else a.get(ANCHOR) if ANCHOR in a else configured_scale if a.get(CONFIGURED) else None
        if scale is None or scale <= 0:
            continue
        value = float(t.value) if counted(t) and a[OUTCOME] == COMPLETE else None
        if line.get(float(scale)) is None:
            line[float(scale)] = value
    return line


def startup_trials(trials: int) -> int:
    """Random trials before TPE models the results: Optuna's 10, fewer for a short study (a third of it, at least 3)."""
    return max(3, min(10, trials // 3))


def switch_margin(best_acc: float, configured_acc: float, val_images: int, z: float) -> float:
    """Points of validation accuracy the best trial must exceed the configured recipe's by to replace it.

    ``z`` standard errors of the difference of two proportions judged on ``val_images`` images each,
    √(p_b(1−p_b)/n + p_c(1−p_c)/n), in points (accuracies are percentages).
    """
    p_b, p_c = best_acc / 100.0, configured_acc / 100.0
    return 100.0 * z * math.sqrt((p_b * (1.0 - p_b) + p_c * (1.0 - p_c)) / val_images)


@dataclass
class TuneResult:
    """What a study chose.

    Attributes:
        recipe: the ``model`` settings the final run trains with (``losses``, ``feature_pairs``, ``lr``).
        trial: the best trial's number; None when the study fell back to the configured recipe.
        val_acc: its validation accuracy (%) after ``tune.epochs``.
        fallback: why the configured recipe is kept, when it is.
        counts: finished trials by outcome.
        seconds: the tuning's cost: every finished trial's training and validation, in every process,
            plus each process's teacher cache.
        configured_trial: the configured recipe's trial's number (None when it is no finished trial).
        configured_val_acc: its validation accuracy.
        val_images: the validation images every trial was judged on.
        kept: why the configured recipe won over a better-scoring trial (``tune.switch_z``), when it did.
    """

    recipe: dict[str, Any]
    trial: int | None
    val_acc: float | None
    fallback: str | None
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    configured_trial: int | None = None
    configured_val_acc: float | None = None
    val_images: int | None = None
    kept: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "trial": self.trial, "val_acc": self.val_acc, "fallback": self.fallback,
                "trials": self.counts, "seconds": round(self.seconds, 3), "configured_trial": self.configured_trial,
                "configured_val_acc": self.configured_val_acc,
                "val_images": self.val_images, "kept": self.kept}


class RecipeStudy:
    """The study in ``directory`` (``RUN/tune``): opened (or read back) under ``settings``."""

    def __init__(self, directory: Path, cfg: TuneConfig, settings: dict[str, Any]) -> None:
        self.directory, self.cfg = directory, cfg
        directory.mkdir(parents=True, exist_ok=True)
        self.lock = directory / LOCK
        self.storage = journal_storage(directory / JOURNAL)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with exclusive(self.lock):
            self.study = optuna.create_study(storage=self.storage, study_name=STUDY_NAME, direction="maximize",
                                             pruner=make_pruner(cfg.pruner), load_if_exists=True)
            self.check_settings(settings)

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Refuse a study run with other settings (one line naming each change); remember them for a new one."""
        now = json.loads(json.dumps(settings))  # the form the journal gives back
        stored = self.study.user_attrs.get("settings")
        if stored is not None and stored != now and self.study.get_trials(deepcopy=False):
            was, new = flatten(stored), flatten(now)
            changed = sorted(k for k in {*was, *new} if was.get(k) != new.get(k))
            diff = "; ".join(f"{k}: was {was.get(k)!r}, now {new.get(k)!r}" for k in changed[:4])
            raise DasError(f"the recipe study in {self.directory} was run with other settings ({diff}); give another "
                           f"--trainer.default_root_dir, the original settings, or delete {self.directory} to start it afresh")
        if stored != now:
            self.study.set_user_attr("settings", now)

    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def run(self, space: RecipeSpace, runs: ShortRuns, log: Callable[[str], None] = print,
            after_trial: Callable[[], None] | None = None) -> None:
        """Run trials until the study holds ``tune.trials`` finished ones (other processes' included); Ctrl-C propagates.

        The trial it interrupts is recorded PRUNED without an outcome: it does not count, and the
        next run takes its place.
        """
        total = self.cfg.trials
        configured = space.default_params()
        fixed = [({CONFIGURED: True}, configured)] if configured is not None else []
        fixed += [({ANCHOR: scale}, params) for scale, params in space.anchor_params()]
        waiting = False
        while True:
            trial = None
            with exclusive(self.lock):
                release_dead_trials(self.study)
                trials = self.trials()
                finished = sum(counted(t) for t in trials)
                running = sum(t.state == TrialState.RUNNING for t in trials)
                if finished >= total:
                    break
                if finished + running < total:
                    # First, and again if the process that ran one died: the configured recipe and the anchors are always judged.
                    if (nxt := next_fixed(fixed, trials)) is not None:
                        self.study.enqueue_trial(nxt[1], user_attrs=nxt[0])
                    elif (scale := self._next_refinement(space, trials)) is not None:
                        self.study.enqueue_trial(space.scale_params(scale), user_attrs={REFINE: scale})
                    # Seeded by the trials made so far: unique to this trial across processes, and the same on a rerun.
                    tpe = optuna.samplers.TPESampler(seed=self.cfg.seed + len(trials), n_startup_trials=startup_trials(total))
                    self.study.sampler = SearchSampler(tpe, self.storage)
                    trial = self.study.ask()
            if trial is None:
                if not waiting:
                    log(f"tune: {finished} of {total} trials finished; waiting for the {running} that other processes are running")
                    waiting = True
                time.sleep(POLL_S)
                continue
            waiting = False
            self._run_trial(trial, space, runs, finished + 1, log)
            if runs.cache_seconds and CACHE_SECONDS + worker_id() not in self.study.user_attrs:
                self.study.set_user_attr(CACHE_SECONDS + worker_id(), runs.cache_seconds)  # this process's cache, counted once
            if after_trial is not None:
                after_trial()

    def _next_refinement(self, space: RecipeSpace, trials: list[FrozenTrial]) -> float | None:
        """The cosine scale of the next refinement trial, while ``tune.refine`` has places left and a midpoint is worth one."""
        if not self.cfg.refine or self.cfg.cosine_scale is None or space.default_params() is None:
            return None
        if sum(REFINE in t.user_attrs and (counted(t) or t.state in PENDING) for t in trials) >= self.cfg.refine:
            return None
        return refine_candidate(line_of(trials, space.configured_scale()))

    def _run_trial(self, trial: optuna.Trial, space: RecipeSpace, runs: ShortRuns, position: int, log: Callable[[str], None]) -> None:
        cfg = self.cfg
        acc, outcome, epoch = None, COMPLETE, 0
        is_fixed = bool(trial.user_attrs.get(CONFIGURED)) or ANCHOR in trial.user_attrs or REFINE in trial.user_attrs
        try:
            recipe = space.recipe(space.suggest(trial))
            trial.set_user_attr(RECIPE, recipe)
            run = runs.start(recipe)
            for epoch in range(1, cfg.epochs + 1):
                run.train_epochs(1)
                if run.diverged:
                    outcome = DIVERGED
                    break
                acc = run.evaluate()
                trial.report(acc, epoch)
                if epoch < cfg.epochs and not is_fixed and trial.should_prune():
                    outcome = PRUNED
                    break
        except BaseException as err:  # not counted: the next run takes its place (a DasError or a bug is raised on)
            if isinstance(err, Exception):
                trial.set_user_attr("error", f"{type(err).__name__}: {' '.join(str(err).split())[:200]}")
            self.study.tell(trial, state=TrialState.PRUNED if isinstance(err, KeyboardInterrupt) else TrialState.FAIL)
            raise
        trial.set_user_attr(SECONDS, run.seconds)
        trial.set_user_attr("epochs", epoch)
        trial.set_user_attr(OUTCOME, outcome)
        if outcome == COMPLETE:
            self.study.tell(trial, acc)
            said = f"{acc:.2f}% validation accuracy after {epoch} epoch(s)"
        else:
            self.study.tell(trial, state=TrialState.PRUNED)
            said = (f"diverged (loss not finite) in epoch {epoch}" if outcome == DIVERGED
                    else f"pruned after epoch {epoch} ({acc:.2f}%)")
        log(f"tune: trial {trial.number} ({position} of {cfg.trials}): {said} in {run.seconds:.1f} s; {describe(recipe)}")

    def result(self, configured: dict[str, Any], val_images: int) -> TuneResult:
        """The best finished trial's recipe, or ``configured`` with the reason when no trial completed.

        Under ``tune.switch_z`` > 0 the configured recipe's trial wins unless the best beats it by
        more than :func:`switch_margin` (the maximum of N noisy accuracies beats it by chance).
        """
        trials = [t for t in self.trials() if counted(t)]
        counts = {o: sum(t.user_attrs[OUTCOME] == o for t in trials) for o in (COMPLETE, PRUNED, DIVERGED)}
        seconds = sum(float(t.user_attrs.get(SECONDS, 0.0)) for t in trials)
        seconds += sum(float(v) for k, v in self.study.user_attrs.items() if k.startswith(CACHE_SECONDS))
        complete = [t for t in trials if t.user_attrs[OUTCOME] == COMPLETE]
        if not complete:
            why = (f"every one of the {len(trials)} trials diverged (its loss became NaN or infinite)" if counts[DIVERGED] == len(trials)
                   else f"none of the {len(trials)} trials completed its {self.cfg.epochs} epochs")
            return TuneResult(configured, None, None, why, counts, seconds)
        best = max(complete, key=lambda t: (t.value, -t.number))  # ties: the earlier trial
        mine = [t for t in complete if t.user_attrs.get(CONFIGURED)]
        conf_trial, conf_acc = (mine[0].number, float(mine[0].value)) if mine else (None, None)
        kept = None
        if mine and best.number != mine[0].number and self.cfg.switch_z > 0:
            margin = switch_margin(float(best.value), float(mine[0].value), val_images, self.cfg.switch_z)
            if float(best.value) - float(mine[0].value) <= margin:
                kept = (f"the best trial, {best.number} ({best.value:.2f}%), beats the configured recipe's ({mine[0].value:.2f}%) by "
                        f"{best.value - mine[0].value:.2f} points, within {margin:.2f} (tune.switch_z {self.cfg.switch_z:g} standard errors "
                        f"on {val_images} validation images)")
                best = mine[0]
        return TuneResult(best.user_attrs[RECIPE], best.number, float(best.value), None, counts, seconds, conf_trial, conf_acc, val_images, kept)
