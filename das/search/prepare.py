"""Everything a search does before its first trial: checks, the study, the teacher, probe batches, references, calibration.

Everything a user can get wrong is checked before the first long step (teacher training, the
ensemble's reference population, the trials), and the run directory's settings are stored only
once all of it has passed, so a typo never leaves a run directory that refuses the corrected
command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from das.data import DasDataModule, probe_batches
from das.proxies import PROXIES
from das.proxies.diswot import DisWOTReference, check_teacher_init
from das.search.calibration_step import SELECTION_OBJECTIVE, Calibration, check_calibrate, check_calibration_data
from das.search.calibration_step import calibrate as run_calibration
from das.search.checks import (
    check_budget_reachable, check_budget_values, check_space_runs, check_study, check_writable, make_space, resolve_device,
)
from das.search.config import BudgetConfig, CalibrateConfig, SpaceConfig, StudyConfig, TeacherConfig
from das.search.directions import check_objectives, directions, objective_names
from das.search.grid import GridSpecs
from das.search.ledger import Ledger, tally
from das.search.reference import load_or_build_reference
from das.search.resume import check_same_settings, remember_scored, score_settings, space_source, store_settings, trial_key
from das.storage import make_storage
from das.search.study import check_sampler, open_study, release_dead_trials
from das.search.teacher_identity import check_same_teacher, check_teacher_here, teacher_accuracy
from das.search.teacher_training import check_teacher, prepare_teacher
from das.search.trial_objective import TrialObjective


@dataclass
class Prepared:
    """A search that has passed every check and has its teacher, probe batches and objective: ready for trials."""

    run_dir: Path
    optuna_study: optuna.Study
    objective: TrialObjective
    ledger: Ledger
    key_of: Any
    proxies: list[str]
    names: list[str]
    budget: BudgetConfig
    study: StudyConfig
    teacher_info: dict[str, Any]
    context: dict[str, Any]
    calibration: Calibration | None
    before: Any  # the Tally when this run started
    remaining: int  # distinct architectures still to score
    teacher_model: torch.nn.Module | None = None  # for a race after the trials
    data: DasDataModule | None = None
    device: torch.device | None = None
    num_classes: int = 0


def prepare_search(run_dir: str | Path, data: DasDataModule, teacher: TeacherConfig, space: SpaceConfig, budget: BudgetConfig,
                   study: StudyConfig, device: str = "auto", log=print, calibrate: CalibrateConfig | None = None,
                   sampler_seed: int | None = None) -> Prepared:
    """Everything before the first trial: checks, the study, the teacher, probe batches, references, calibration.

    A worker of ``--workers N`` runs it too, and finds the teacher, the reference population
    and the calibration done (read back from the run directory and the study).
    """
    run_dir = Path(run_dir)
    calibrate = calibrate if calibrate is not None else CalibrateConfig()
    check_sampler(study.sampler)
    check_objectives(study, calibrate)
    names = objective_names(study)
    proxies = [*names, *[p for p in study.report if p not in names]]
    needs_reference = check_study(study, proxies)
    check_calibrate(calibrate, data.hparams.get("val_fraction"))
    check_teacher_init(teacher.init)
    check_budget_values(budget)
    search_space, space_args = make_space(space)
    grid = GridSpecs(search_space, space.name) if study.sampler == "grid" else None
    dev = resolve_device(device)
    check_writable(run_dir)
    seed = study.seed if sampler_seed is None else sampler_seed
    optuna_study = open_study(make_storage(study.storage, run_dir), study.study_name, study.sampler, seed, directions(names))
    source = space_source(search_space)
    settings = score_settings(data, teacher, space.name, space_args, budget, study, needs_reference, calibrate, space_source=source)
    # A calibrating run's objective is known only after the calibration; it is compared then.
    check_same_settings(optuna_study, {k: v for k, v in settings.items() if not (calibrate.students and k in ("objective", "objectives"))})

    data.setup("fit")
    num_classes = data.num_classes
    batches = [(x.to(dev), y.to(dev)) for x, y in probe_batches(data, study.probe_batch_size, study.probe_batches, study.seed)]
    input_shape = tuple(batches[0][0].shape[1:])
    sample = batches[0][0][:2].cpu()
    check_space_runs(search_space, space.name, space_args, num_classes, sample, data.hparams.get("image_size"))
    check_budget_reachable(search_space, space.name, budget, num_classes, input_shape, study.seed)
    check_calibration_data(calibrate, data)
    loaded = check_teacher(teacher, num_classes, sample)
    shared = study.storage is not None  # the study may be shared beyond this run directory (other machines)
    if shared:
        check_teacher_here(optuna_study, teacher, run_dir)

    teacher_model, teacher_ckpt = prepare_teacher(teacher, data, num_classes, input_shape, run_dir, log, seed=study.seed, loaded=loaded)
    if shared:
        check_same_teacher(optuna_study, teacher_ckpt, run_dir)
    teacher_model.to(dev)
    teacher_acc = teacher_accuracy(optuna_study, teacher, teacher_model, teacher_ckpt, data, dev, log)
    needs_teacher = any(PROXIES.get(p).needs_teacher for p in proxies) or calibrate.students > 0
    reference = DisWOTReference.from_teacher(teacher_model, batches[0], init=teacher.init, seed=study.seed) if needs_teacher else None

    # A calibration ranks every proxy that can run, the ensemble too when the probe batches allow it.
    ranks_reference = calibrate.students > 0 and any(
        PROXIES.get(n).needs_reference and PROXIES.get(n).min_batches <= len(batches) for n in PROXIES.names())
    ensemble_reference = None
    if needs_reference or ranks_reference:
        ensemble_reference = load_or_build_reference(
            run_dir, log, study=optuna_study, space=search_space, batches=batches, budget=budget, num_classes=num_classes,
            device=dev, size=study.reference_size, seed=study.seed, teacher=reference,
        )
    calibration: Calibration | None = None
    derived: dict = {}  # objectives computed from proxy scores: a calibration's fitted combination
    if calibrate.students:
        calibration = run_calibration(
            calibrate, run_dir=run_dir, data=data, teacher_name=teacher.spec, teacher=teacher_model, space=search_space,
            budget=budget, study=study, batches=batches, reference=reference, teacher_init=teacher.init,
            ensemble_reference=ensemble_reference, num_classes=num_classes, input_shape=input_shape, device=dev, log=log,
        )
        chosen = calibration.objective
        names = [chosen]
        # the proxies the rule reads first; the configured objective and the reports stay in the leaderboard
        computed = list(dict.fromkeys([*calibration.features, *proxies]))
        if chosen == SELECTION_OBJECTIVE:
            derived = {SELECTION_OBJECTIVE: calibration.value}
        needs_reference = any(PROXIES.get(p).needs_reference for p in computed)
        proxies = list(dict.fromkeys([chosen, *computed]))
        settings = score_settings(data, teacher, space.name, space_args, budget, study, needs_reference, calibrate,
                                  objective=chosen, space_source=source)
        check_same_settings(optuna_study, settings)
    key_of = trial_key(search_space)
    ledger = Ledger(study.trials, key_of, release=release_dead_trials)
    objective = TrialObjective(search_space, batches, reference, [p for p in proxies if p not in derived], budget, num_classes,
                               input_shape, dev, study.seed, ensemble_reference, objectives=names, ledger=ledger, grid=grid,
                               derived=derived)
    remember_scored(optuna_study, objective, key_of, log)
    store_settings(optuna_study, settings)

    released = release_dead_trials(optuna_study)
    if released:
        log(f"search: {released} trial(s) of a process that died are not counted; the architectures they were scoring are scored again")
    before = tally(optuna_study, key_of)
    remaining = max(0, study.trials - len(ledger.scored_keys(optuna_study.get_trials(deepcopy=False))))
    if before.trials:
        log(f"search: resuming study {study.study_name!r}: {before.scored} architectures scored ({before.duplicates} duplicates, "
            f"{before.infeasible} over budget), {remaining} to go")
    teacher_info = {"spec": teacher.spec, "checkpoint": teacher_ckpt, "test_acc": teacher_acc}
    context = {
        "proxy": proxies[0],
        "teacher": teacher_info,
        "data": {"dataset": data.hparams.get("dataset"), "num_classes": num_classes, "input_shape": list(input_shape)},
    }
    return Prepared(run_dir, optuna_study, objective, ledger, key_of, proxies, names, budget, study, teacher_info, context,
                    calibration, before, remaining, teacher_model, data, dev, num_classes)
