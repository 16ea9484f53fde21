"""Run a search end to end: checks → teacher → probe batches → (calibration) → Optuna study → result files.

:mod:`das.search.prepare` does everything before the first trial, :mod:`das.search.optimize`
(one process) or :mod:`das.search.workers` (several) runs the trials, and :func:`write_results`
writes the result files from the study as it is then.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from das.data import DasDataModule
from das.errors import DasError
from das.search.checks import budget_text, check_workers
from das.search.config import BudgetConfig, CalibrateConfig, RaceConfig, SpaceConfig, StudyConfig, TeacherConfig
from das.search.directions import directions
from das.search.ledger import tally
from das.search.optimize import optimize_here
from das.search.pareto import write_pareto
from das.search.plots import write_plots
from das.search.prepare import Prepared, prepare_search
from das.search.race_step import Race, check_race, run_race_step
from das.search.results import leaderboard, write_best, write_leaderboard
from das.search.study import release_dead_trials
from das.search.workers import WorkerArgs, run_workers


def run_search(
    run_dir: str | Path,
    data: DasDataModule,
    teacher: TeacherConfig,
    space: SpaceConfig,
    budget: BudgetConfig,
    study: StudyConfig,
    device: str = "auto",
    log=print,
    calibrate: CalibrateConfig | None = None,
    workers: int = 1,
    first_worker: int = 0,
    race: RaceConfig | None = None,
) -> dict[str, Any]:
    """Search ``space`` for the student that best matches ``teacher``; return a summary.

    The study scores ``study.trials`` distinct architectures within the budget
    (:mod:`das.search.ledger`), or stops earlier when the space has no more (said in one line).
    With ``calibrate.students`` > 0 the objective is chosen first by a calibration on this space
    (:mod:`das.search.calibration_step`). With ``race.finalists`` > 0 the best-ranked finalists and
    the largest in budget are distilled briefly after the trials and the best on validation
    becomes best_arch.json (:mod:`das.search.race_step`).

    With ``workers`` > 1 this process does everything up to the trials (checks, teacher,
    reference population, calibration), then scores with that many worker processes on the same
    study (:mod:`das.search.workers`) and writes the results once they have all ended. Worker i
    (counted from ``first_worker``) samples with seed ``study.seed + i``; this process alone
    uses ``study.seed + first_worker``.
    """
    started = time.perf_counter()
    check_workers(workers, first_worker)
    calibrate = calibrate if calibrate is not None else CalibrateConfig()
    race = race if race is not None else RaceConfig()
    check_race(race, data.hparams.get("val_fraction"))
    prepared = prepare_search(run_dir, data, teacher, space, budget, study, device, log, calibrate,
                              sampler_seed=study.seed + first_worker)
    count = plan_workers(workers, prepared.remaining, log)
    failed: list[str] = []
    if count > 1:
        args = WorkerArgs(str(prepared.run_dir), dict(data.hparams), teacher, space, budget, study, device, calibrate)
        outcome = run_workers(prepared, args, count, first_worker, log)
        interrupted, stopped, failed = outcome.interrupted, outcome.stopped, outcome.failed
    else:
        interrupted = optimize_here(prepared) if prepared.remaining else False
        stopped = prepared.objective.stopped
    return write_results(prepared, interrupted=interrupted, stopped=stopped, started=started, log=log, failed=failed, race=race)


def write_results(p: Prepared, interrupted: bool, stopped: str | None, started: float, log=print,
                  failed: list[str] | None = None, race: RaceConfig | None = None) -> dict[str, Any]:
    """leaderboard.csv, best_arch.json, pareto.json, plots/ and search_summary.json from the study as it is now.

    Raises:
        DasError: when no scored candidate is within the budget, or when workers failed and the
            study is short of its count (the results so far are written first).
    """
    optuna_study, names, proxies, run_dir, budget = p.optuna_study, p.names, p.proxies, p.run_dir, p.budget
    release_dead_trials(optuna_study)
    dirs = directions(names)
    rows = leaderboard(optuna_study, proxies, dirs)
    front = write_pareto(rows, names, dirs, run_dir / "pareto.json", **p.context) if len(names) > 1 else None
    raced = None
    if race is not None and race.finalists and not interrupted and not (failed and tally(optuna_study, p.key_of).scored < p.study.trials):
        write_leaderboard(rows, proxies, run_dir / "leaderboard.csv")  # the zero-cost result stands if the race is interrupted
        write_best(rows, run_dir / "best_arch.json", **p.context)
        raced = _race(race, rows, p, log)
    write_leaderboard(rows, proxies, run_dir / "leaderboard.csv")
    best = write_best(rows, run_dir / "best_arch.json", **p.context,
                      **({} if raced is None else {"race": raced.summary(race.epochs)}),
                      choose=None if raced is None else raced.winner_spec)
    if rows:
        write_plots(run_dir, rows, proxies, names, dirs, optuna_study, budget.max_params)
    counts = tally(optuna_study, p.key_of)
    teacher_info = p.teacher_info
    summary = {
        "run_dir": str(run_dir),
        # study.trials counts "scored": distinct architectures within the budget whose proxies ran.
        **counts.as_dict(),
        "distinct_archs": len(rows),
        "stopped_early": stopped,
        "objective": proxies[0],
        "objectives": names,
        "sampler": p.study.sampler,
        "pareto": None if front is None else len(front),
        "calibration": None if p.calibration is None else p.calibration.summary(),
        "race": None if raced is None else raced.summary(race.epochs),
        "best": None if best is None else {k: v for k, v in best.items() if k != "spec"},
        "teacher": teacher_info,
        "teacher_checkpoint": teacher_info["checkpoint"],
        "teacher_test_acc": teacher_info["test_acc"],
        "interrupted": interrupted,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (run_dir / "search_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if stopped and not interrupted:
        log(f"search: stopped with {counts.scored} of study.trials={p.study.trials} distinct architectures within the budget "
            f"scored: {stopped}")
    if interrupted:
        log("search: interrupted; results so far are written, rerun the same command to resume")
        return summary
    if failed and counts.scored < p.study.trials and not stopped:
        raise DasError(f"{failed[0]}; {counts.scored} of study.trials={p.study.trials} architectures are scored and the results "
                       "so far are written: rerun the same command to resume")
    if best is None:
        smallest = min((r["params"] for r in rows), default=None)
        fastest = min((r["latency_ms"] for r in rows if r.get("latency_ms") is not None), default=None)
        fast = f", the fastest {fastest:.3g} ms" if fastest is not None else ""
        raise DasError(f"no scored candidate is within {budget_text(budget)}; the smallest seen has {smallest} params{fast}: raise the budget")
    return summary


def _race(cfg: RaceConfig, rows: list[dict[str, Any]], p: Prepared, log) -> Race | None:
    """Race the finalists and write each one's validation accuracy and epochs into its leaderboard row."""
    assert p.teacher_model is not None and p.data is not None and p.device is not None
    raced = run_race_step(cfg, rows, run_dir=p.run_dir, data=p.data, teacher_name=p.teacher_info["spec"], teacher=p.teacher_model,
                          num_classes=p.num_classes, device=p.device, objective=p.names[0], log=log)
    if raced is not None:
        for row, finalist in zip(raced.rows, raced.result.finalists):
            row["race_val_acc"], row["race_epochs"] = round(finalist.last_acc, 4), finalist.epochs
    return raced


def plan_workers(workers: int, remaining: int, log=print) -> int:
    """How many workers to start: ``workers``, but never more than the architectures left to score (said in one line)."""
    if workers > 1 and remaining < workers:
        if remaining == 0:
            log(f"search: workers={workers} but nothing is left to score; writing the results")
        else:
            log(f"search: workers={workers} is more than the {remaining} architecture(s) left to score; starting {remaining}")
        return remaining
    return workers
