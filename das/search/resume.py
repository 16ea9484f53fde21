"""Resuming a study: the settings its scores depend on, each stored trial's architecture key, what it already scored.

Rerunning the same command resumes its study. A resumed study must have been scored under the
same settings (:func:`score_settings`, refused otherwise by :func:`check_same_settings`), and
what its stored trials learnt is reused (:func:`remember_scored`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any

import optuna
from tqdm.auto import tqdm

from das.calibrate.results import flatten
from das.data import DasDataModule
from das.errors import DasError
from das.search.calibration_step import calibrate_settings
from das.search.config import BudgetConfig, CalibrateConfig, StudyConfig, TeacherConfig
from das.search.directions import objective_names
from das.search.ledger import DUPLICATE, INFEASIBLE, SCORED, kind_of
from das.search.results import RESCORED, rescored, trial_scores
from das.search.trial_objective import Candidate, TrialObjective
from das.spaces import SearchSpace
from das.spec import ArchSpec


def space_source(space: SearchSpace) -> str | None:
    """For a user's define-by-run space, a hash of its module's source, so an edited function is not resumed as the same space.

    The whole module, since the network classes the function builds usually live beside it.
    None for a built-in space (its code is das's) or a function whose source cannot be read.
    """
    from das.spaces.user import UserSpace

    if not isinstance(space, UserSpace):
        return None
    module = inspect.getmodule(space.function)
    try:
        text = inspect.getsource(module) if module is not None else inspect.getsource(space.function)
    except (OSError, TypeError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def trial_key(space: SearchSpace):
    """A stored trial's architecture key: its ``key`` attr, or (a trial of an older das) ``space.canonical`` of its spec."""
    cache: dict[int, str | None] = {}

    def key_of(trial: optuna.trial.FrozenTrial) -> str | None:
        key = trial.user_attrs.get("key")
        if key is not None:
            return key
        if trial.number not in cache:
            arch = trial.user_attrs.get("arch")
            cache[trial.number] = space.canonical(ArchSpec.from_json(arch)) if arch else None
        return cache[trial.number]

    return key_of


def score_settings(data: DasDataModule, teacher: TeacherConfig, space_name: str, space_args: dict[str, Any],
                   budget: BudgetConfig, study: StudyConfig, needs_reference: bool, calibrate: CalibrateConfig | None = None,
                   objective: str | None = None, space_source: str | None = None) -> dict[str, Any]:
    """Every setting that changes a stored score or whether it is within budget, as dotted keys.

    A resumed study must have been scored under the same values: its old and new trials are
    compared with each other. ``study.report`` is not here: proxies a resumed study reports anew
    are computed for the stored candidates (see :func:`remember_scored`). ``objective`` is the
    one the trials maximise (a calibration's choice; default ``study.objective``), and the
    calibration's settings are stored whether it is on or off, so turning it on or changing it
    in a run directory is refused before any work. A user space's ``space_source`` (a hash of
    its module, :func:`space_source`) is stored too: the same name with edited code is another
    space. ``objectives`` is the list the trials optimise (one, or several).
    """
    h = data.hparams
    names = [objective] if objective else objective_names(study)
    settings: dict[str, Any] = {
        "space": {"name": space_name, "args": space_args, **({"source": space_source} if space_source else {})},
        "objective": names[0],
        "objectives": names,
        # The probe images: which ones (dataset, split, draw) and how they are seen.
        # (transform: how a streamed dataset's probe images are brought to size; runs from before it had auto)
        "data": {k: h.get(k) for k in ("dataset", "root", "train_file", "image_size", "mean", "std", "val_fraction", "seed", "transform")},
        # probe.seed also seeds every student's initial weights and the teacher's training.
        "probe": {"batch_size": study.probe_batch_size, "batches": study.probe_batches, "seed": study.seed},
        "budget": {"max_params": budget.max_params, "max_flops": budget.max_flops,
                   # stored only when set, so the run dirs of an older das resume as they were
                   **({"max_latency_ms": budget.max_latency_ms} if budget.max_latency_ms is not None else {})},
        # What the teacher is, and which of its weights DisWOT compares with.
        "teacher": {"spec": teacher.spec, "checkpoint": teacher.checkpoint, "init": teacher.init},
    }
    if teacher.checkpoint is None:  # trained in the run directory: its recipe makes its weights
        settings["teacher"].update(epochs=teacher.epochs, lr=teacher.lr, augment=list(data.augment), batch_size=h.get("batch_size"))
    if needs_reference:
        settings["ensemble_reference_size"] = study.reference_size
    if calibrate is not None:
        settings["calibrate"] = calibrate_settings(calibrate)
    return flatten(json.loads(json.dumps(settings)))  # the form the storage gives back


def check_same_settings(optuna_study: optuna.Study, settings: dict[str, Any]) -> None:
    """Refuse to resume a study that was scored under other settings: its scores would not compare.

    Settings the run directory has not stored (a run of an older das, an option the search did
    not use then) are taken as they are now.
    """
    stored = flatten(optuna_study.user_attrs.get("settings") or {})
    changed = [key for key in settings if key in stored and stored[key] != settings[key]]
    if changed:
        diff = "; ".join(f"{k}: was {stored[k]!r}, now {settings[k]!r}" for k in changed)
        raise DasError(f"study {optuna_study.study_name!r} in this run_dir was run with other settings ({diff}); use a new --run_dir or the original settings")


def store_settings(optuna_study: optuna.Study, settings: dict[str, Any]) -> None:
    """Remember the settings, only once the run is known to be valid (a typo must not stick)."""
    stored = flatten(optuna_study.user_attrs.get("settings") or {})
    if {**stored, **settings} != stored:
        optuna_study.set_user_attr("settings", {**stored, **settings})


def remember_scored(optuna_study: optuna.Study, objective: TrialObjective, key_of, log=print) -> None:
    """On resume, reuse what the stored trials learnt (scores; the size of over-budget ones), and add missing proxies.

    A study resumed with more proxies in ``study.report`` scores only those on its stored
    candidates within the budget (same seed, same probe batches, so the same values a fresh
    study gets) and keeps them in the study, so every leaderboard row is complete.
    """
    extra = rescored(optuna_study)
    archs: dict[str, set[str]] = {}
    for trial in optuna_study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        kind = kind_of(trial)
        if "arch" not in attrs or kind not in (SCORED, DUPLICATE, INFEASIBLE) or (kind != INFEASIBLE and "scores" not in attrs):
            continue
        spec = ArchSpec.from_json(attrs["arch"])
        key = key_of(trial)
        feasible = kind != INFEASIBLE
        candidate = objective.seen.setdefault(
            key, Candidate(spec, attrs["params"], attrs.get("flops"), {}, attrs.get("latency_ms"), feasible=feasible))
        if not feasible:
            continue
        archs.setdefault(key, set()).add(attrs["arch"])
        for name, value in trial_scores(attrs, extra).items():
            candidate.scores.setdefault(name, value)
    todo = {key: [p for p in objective.proxies if p not in c.scores] for key, c in objective.seen.items() if c.feasible}
    todo = {key: missing for key, missing in todo.items() if missing}
    if not todo:
        return
    names = sorted({p for missing in todo.values() for p in missing})
    log(f"search: scoring {', '.join(names)} for {len(todo)} architecture(s) stored before they were reported")
    for key, missing in tqdm(todo.items(), desc="rescore", unit="arch"):
        candidate = objective.seen[key]
        new = objective.score(objective.build(candidate.spec), missing, flops=candidate.flops)
        candidate.scores.update(new)
        for arch in archs[key]:
            optuna_study.set_user_attr(RESCORED + arch, {**extra.get(arch, {}), **new})
