"""Run a search end to end: teacher → probe batches → Optuna study → result files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from das.data import DasDataModule, probe_batches
from das.errors import DasError
from das.proxies import PROXIES
from das.proxies.diswot import DisWOTReference
from das.search.config import BudgetConfig, SpaceConfig, StudyConfig, TeacherConfig
from das.search.objective import Candidate, Objective
from das.search.reference import load_or_build_reference
from das.search.results import leaderboard, plot_scores, write_best, write_leaderboard
from das.search.study import make_storage, open_study
from das.search.teacher import prepare_teacher
from das.spaces import create_space
from das.spec import ArchSpec
from das.stats import count_params


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; an explicit device must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DasError(f"device={device!r} but no CUDA device is available; use device=cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise DasError(f"device={device!r} is not a torch device; use auto, cpu or cuda[:N]") from None


def run_search(
    run_dir: str | Path,
    data: DasDataModule,
    teacher: TeacherConfig,
    space: SpaceConfig,
    budget: BudgetConfig,
    study: StudyConfig,
    device: str = "auto",
    log=print,
) -> dict[str, Any]:
    """Search ``space`` for the student that best matches ``teacher``; return a summary."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    proxies = [study.objective, *[p for p in study.report if p != study.objective]]
    for name in proxies:
        PROXIES.get(name)
    needed = max(PROXIES.get(name).min_batches for name in proxies)
    if study.probe_batches < needed:
        hungry = [n for n in proxies if PROXIES.get(n).min_batches > study.probe_batches]
        raise DasError(f"study.probe_batches={study.probe_batches} but {hungry} need {needed}; set --study.probe_batches {needed}")
    needs_reference = any(PROXIES.get(name).needs_reference for name in proxies)
    dev = resolve_device(device)
    search_space = create_space(space.name, **space.args)

    data.setup("fit")
    num_classes = data.num_classes
    batches = [(x.to(dev), y.to(dev)) for x, y in probe_batches(data, study.probe_batch_size, study.probe_batches, study.seed)]
    input_shape = tuple(batches[0][0].shape[1:])
    _check_budget_reachable(search_space, budget, num_classes)

    # Open the study before the (possibly long) teacher training so a bad sampler or storage fails at once.
    optuna_study = open_study(make_storage(study.storage, run_dir), study.study_name, study.sampler, study.seed)
    settings = {
        "space": {"name": space.name, "args": dict(space.args)},
        "objective": study.objective,
        "teacher": {"spec": teacher.spec, "checkpoint": teacher.checkpoint},
        "data": {k: data.hparams.get(k) for k in ("dataset", "root", "image_size", "mean", "std", "train_file")},
        "probe": {"batch_size": study.probe_batch_size, "batches": study.probe_batches, "seed": study.seed},
        "budget": {"max_params": budget.max_params, "max_flops": budget.max_flops},
    }
    if needs_reference:
        settings["ensemble_reference_size"] = study.reference_size
    _check_same_settings(optuna_study, settings)
    teacher_model, teacher_ckpt = prepare_teacher(teacher, data, num_classes, input_shape, run_dir, log, seed=study.seed)
    teacher_model.to(dev)
    needs_teacher = any(PROXIES.get(p).needs_teacher for p in proxies)
    reference = DisWOTReference.from_teacher(teacher_model, batches[0]) if needs_teacher else None

    ensemble_reference = None
    if needs_reference:
        ensemble_reference = load_or_build_reference(
            run_dir, log, space=search_space, batches=batches, budget=budget, num_classes=num_classes,
            device=dev, size=study.reference_size, seed=study.seed, teacher=reference,
        )
    objective = Objective(search_space, batches, reference, proxies, budget, num_classes, input_shape, dev, study.seed, ensemble_reference)
    _remember_scored(optuna_study, objective, search_space)
    done = len([t for t in optuna_study.trials if t.state.is_finished()])
    remaining = max(0, study.trials - done)
    if done:
        log(f"search: resuming study {study.study_name!r} with {done} finished trials, {remaining} to go")
    interrupted = False
    with tqdm(total=study.trials, initial=min(done, study.trials), desc="search", unit="trial") as bar:
        def progress(st, _trial) -> None:
            bar.update(1)
            try:
                bar.set_postfix({study.objective: f"{st.best_value:.4g}"})
            except ValueError:  # no feasible trial yet
                pass

        try:
            if remaining:
                optuna_study.optimize(objective, n_trials=remaining, callbacks=[progress], catch=(FloatingPointError,))
        except KeyboardInterrupt:
            interrupted = True

    rows = leaderboard(optuna_study, proxies)
    write_leaderboard(rows, proxies, run_dir / "leaderboard.csv")
    context = {
        "proxy": study.objective,
        "teacher": {"spec": teacher.spec, "checkpoint": teacher_ckpt},
        "data": {"dataset": data.hparams.get("dataset"), "num_classes": num_classes, "input_shape": list(input_shape)},
    }
    best = write_best(rows, run_dir / "best_arch.json", **context)
    if rows:
        plot_scores(rows, study.objective, run_dir / "scores.png")
    summary = {
        "run_dir": str(run_dir),
        "trials_finished": len([t for t in optuna_study.trials if t.state.is_finished()]),
        "distinct_archs": len(rows),
        "best": None if best is None else {k: v for k, v in best.items() if k != "spec"},
        "teacher_checkpoint": teacher_ckpt,
        "interrupted": interrupted,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (run_dir / "search_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if best is None:
        smallest = min((r["params"] for r in rows), default=None)
        raise DasError(f"no scored candidate is within the budget {budget}; the smallest seen has {smallest} params")
    if interrupted:
        log("search: interrupted; results so far are written, rerun the same command to resume")
    return summary


def _check_budget_reachable(space, budget: BudgetConfig, num_classes: int) -> None:
    """Fail before any work when even the space's smallest member is over the params budget."""
    smallest: ArchSpec | None = space.smallest() if hasattr(space, "smallest") else None
    if smallest is None or budget.max_params is None:
        return
    params = count_params(smallest.build(num_classes))
    if params > budget.max_params:
        raise DasError(f"max_params={budget.max_params} is below the smallest candidate of {space.name} ({smallest}: {params} params); raise the budget")


def _check_same_settings(optuna_study, settings: dict[str, Any]) -> None:
    """Refuse to resume a study that was scored under other settings: its scores would not compare."""
    settings = json.loads(json.dumps(settings))  # the form the storage gives back
    stored = optuna_study.user_attrs.get("settings")
    if stored is None:
        optuna_study.set_user_attr("settings", settings)
        return
    changed = [key for key in settings if stored.get(key) != settings[key]]
    if changed:
        diff = "; ".join(f"{k}: was {stored.get(k)}, now {settings[k]}" for k in changed)
        raise DasError(f"study {optuna_study.study_name!r} in this run_dir was run with other settings ({diff}); use a new --run_dir or the original settings")


def _remember_scored(optuna_study, objective: Objective, space) -> None:
    """On resume, reuse the scores of architectures already evaluated."""
    for trial in optuna_study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        if "arch" in attrs and "scores" in attrs:
            spec = ArchSpec.from_json(attrs["arch"])
            objective.seen.setdefault(space.canonical(spec), Candidate(spec, attrs["params"], attrs["flops"], attrs["scores"]))
