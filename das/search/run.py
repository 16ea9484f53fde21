"""Run a search end to end: checks → teacher → probe batches → (calibration) → Optuna study → result files.

Everything a user can get wrong is checked before the first long step (teacher training, the
ensemble's reference population, the trials), and the run directory's settings are stored only
once all of it has passed, so a typo never leaves a run directory that refuses the corrected
command.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from tqdm.auto import tqdm

from das.calibrate.results import flatten
from das.data import DasDataModule, probe_batches
from das.errors import DasError, close_matches_hint
from das.evaluate import top1_accuracy
from das.proxies import PROXIES
from das.proxies.diswot import DisWOTReference, check_teacher_init
from das.search.calibrate import Calibration, calibrate_settings, check_calibrate, check_calibration_data
from das.search.calibrate import calibrate as run_calibration
from das.search.config import BudgetConfig, CalibrateConfig, SpaceConfig, StudyConfig, TeacherConfig
from das.search.grid import GridSpecs
from das.search.ledger import DUPLICATE, INFEASIBLE, KIND, SCORED, Ledger, kind_of, tally
from das.search.objective import Candidate, Objective
from das.search.objectives import check_objectives, directions, objective_names
from das.search.pareto import write_pareto
from das.search.plots import write_plots
from das.search.reference import load_or_build_reference, random_members
from das.search.results import RESCORED, leaderboard, rescored, trial_scores, write_best, write_leaderboard
from das.search.study import (
    Interruptible, check_sampler, make_storage, open_study, release_dead_trials, release_own_trials, stop_on_interrupt,
)
from das.search.teacher import check_teacher, prepare_teacher
from das.spaces import SPACES, SearchSpace
from das.spec import ArchSpec
from das.stats import count_flops, count_params, meta_params


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
    calibrate: CalibrateConfig | None = None,
    workers: int = 1,
    first_worker: int = 0,
) -> dict[str, Any]:
    """Search ``space`` for the student that best matches ``teacher``; return a summary.

    The study scores ``study.trials`` distinct architectures within the budget
    (:mod:`das.search.ledger`), or stops earlier when the space has no more (said in one line).
    With ``calibrate.students`` > 0 the objective is chosen first by a calibration on this space
    (:mod:`das.search.calibrate`); ``study.objective`` is kept unless a proxy beats ``params``
    by more than the noise.

    With ``workers`` > 1 this process does everything up to the trials (checks, teacher,
    reference population, calibration), then scores with that many worker processes on the same
    study (:mod:`das.search.workers`) and writes the results once they have all ended. Worker i
    (counted from ``first_worker``) samples with seed ``study.seed + i``; this process alone
    uses ``study.seed + first_worker``.
    """
    started = time.perf_counter()
    check_workers(workers, first_worker)
    calibrate = calibrate if calibrate is not None else CalibrateConfig()
    prepared = prepare_search(run_dir, data, teacher, space, budget, study, device, log, calibrate,
                              sampler_seed=study.seed + first_worker)
    count = plan_workers(workers, prepared.remaining, log)
    failed: list[str] = []
    if count > 1:
        from das.search.workers import WorkerArgs, run_workers

        args = WorkerArgs(str(prepared.run_dir), dict(data.hparams), teacher, space, budget, study, device, calibrate)
        outcome = run_workers(prepared, args, count, first_worker, log)
        interrupted, stopped, failed = outcome.interrupted, outcome.stopped, outcome.failed
    else:
        interrupted = optimize_here(prepared) if prepared.remaining else False
        stopped = prepared.objective.stopped
    return write_results(prepared, interrupted=interrupted, stopped=stopped, started=started, log=log, failed=failed)


@dataclass
class Prepared:
    """A search that has passed every check and has its teacher, probe batches and objective: ready for trials."""

    run_dir: Path
    optuna_study: optuna.Study
    objective: Objective
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
    needs_reference = _check_study(study, proxies)
    check_calibrate(calibrate, data.hparams.get("val_fraction"))
    check_teacher_init(teacher.init)
    _check_budget_values(budget)
    search_space, space_args = make_space(space)
    grid = GridSpecs(search_space, space.name) if study.sampler == "grid" else None
    dev = resolve_device(device)
    _check_writable(run_dir)
    seed = study.seed if sampler_seed is None else sampler_seed
    optuna_study = open_study(make_storage(study.storage, run_dir), study.study_name, study.sampler, seed, directions(names))
    source = space_source(search_space)
    settings = score_settings(data, teacher, space.name, space_args, budget, study, needs_reference, calibrate, space_source=source)
    # A calibrating run's objective is known only after the calibration; it is compared then.
    _check_same_settings(optuna_study, {k: v for k, v in settings.items() if not (calibrate.students and k == "objective")})

    data.setup("fit")
    num_classes = data.num_classes
    batches = [(x.to(dev), y.to(dev)) for x, y in probe_batches(data, study.probe_batch_size, study.probe_batches, study.seed)]
    input_shape = tuple(batches[0][0].shape[1:])
    sample = batches[0][0][:2].cpu()
    _check_space_runs(search_space, space.name, space_args, num_classes, sample, data.hparams.get("image_size"))
    _check_budget_reachable(search_space, space.name, budget, num_classes, input_shape, study.seed)
    check_calibration_data(calibrate, data)
    loaded = check_teacher(teacher, num_classes, sample)
    shared = study.storage is not None  # the study may be shared beyond this run directory (other machines)
    if shared:
        _check_teacher_here(optuna_study, teacher, run_dir)

    teacher_model, teacher_ckpt = prepare_teacher(teacher, data, num_classes, input_shape, run_dir, log, seed=study.seed, loaded=loaded)
    if shared:
        _check_same_teacher(optuna_study, teacher_ckpt, run_dir)
    teacher_model.to(dev)
    teacher_acc = _teacher_accuracy(optuna_study, teacher, teacher_model, teacher_ckpt, data, dev, log)
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
    if calibrate.students:
        calibration = run_calibration(
            calibrate, run_dir=run_dir, data=data, teacher_name=teacher.spec, teacher=teacher_model, space=search_space,
            budget=budget, study=study, batches=batches, reference=reference, teacher_init=teacher.init,
            ensemble_reference=ensemble_reference, num_classes=num_classes, input_shape=input_shape, device=dev, log=log,
        )
        chosen = calibration.choice.proxy
        names = [chosen]
        proxies = [chosen, *[p for p in proxies if p != chosen]]  # the configured objective stays in the leaderboard
        needs_reference = any(PROXIES.get(p).needs_reference for p in proxies)
        settings = score_settings(data, teacher, space.name, space_args, budget, study, needs_reference, calibrate,
                                  objective=chosen, space_source=source)
        _check_same_settings(optuna_study, settings)
    key_of = trial_key(search_space)
    ledger = Ledger(study.trials, key_of, release=release_dead_trials)
    objective = Objective(search_space, batches, reference, proxies, budget, num_classes, input_shape, dev, study.seed,
                          ensemble_reference, objectives=names, ledger=ledger, grid=grid)
    _remember_scored(optuna_study, objective, key_of, log)
    _store_settings(optuna_study, settings)

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
                    calibration, before, remaining)


def optimize_here(p: Prepared, progress: bool = True) -> bool:
    """Run this process's trials until the study has its count (or stops early); return whether Ctrl-C stopped it.

    Ctrl-C lets the running trial finish (a second one abandons it); a trial left RUNNING by a
    Ctrl-C between its creation and its start, or by a process that died meanwhile, is released.
    """
    optuna_study, names, objective_name = p.optuna_study, p.names, p.proxies[0]
    runner = Interruptible(p.objective)
    interrupted = False
    before = p.before
    with tqdm(total=p.study.trials, initial=min(before.scored, p.study.trials), desc="search", unit="arch", disable=not progress) as bar:
        seen = {"duplicates": before.duplicates, "over budget": before.infeasible}

        def show(st: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            kind = trial.user_attrs.get(KIND)
            if trial.state == optuna.trial.TrialState.PRUNED or kind is None:  # surplus or interrupted: not counted
                return
            if kind == SCORED:
                bar.update(1)
            else:
                seen["duplicates" if kind == DUPLICATE else "over budget"] += 1
            postfix = dict(seen)
            if len(names) == 1:
                try:
                    postfix = {objective_name: f"{st.best_value:.4g}", **postfix}
                except ValueError:  # no feasible trial yet
                    pass
            bar.set_postfix(postfix)

        try:
            with stop_on_interrupt(optuna_study) as ctrl_c:
                optuna_study.optimize(runner, callbacks=[show], catch=(FloatingPointError,))
        except KeyboardInterrupt:  # a second Ctrl-C; inside a trial, the runner catches it
            interrupted = True
    interrupted = interrupted or ctrl_c["stopped"] or runner.interrupted
    release_own_trials(optuna_study)  # a Ctrl-C between a trial's creation and its start
    release_dead_trials(optuna_study)  # a process killed just before this run started is judged again
    return interrupted


def write_results(p: Prepared, interrupted: bool, stopped: str | None, started: float, log=print,
                  failed: list[str] | None = None) -> dict[str, Any]:
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
    write_leaderboard(rows, proxies, run_dir / "leaderboard.csv")
    best = write_best(rows, run_dir / "best_arch.json", **p.context)
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
        raise DasError(f"no scored candidate is within {_budget_text(budget)}; the smallest seen has {smallest} params{fast}: raise the budget")
    return summary


def check_workers(workers: int, first_worker: int = 0) -> None:
    """Refuse a worker count or first worker index that is not a number of processes."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DasError(f"workers={workers!r} must be a positive integer: the number of processes that score trials "
                       "on this machine (1 scores in this process)")
    if isinstance(first_worker, bool) or not isinstance(first_worker, int) or first_worker < 0:
        raise DasError(f"first_worker={first_worker!r} must be an integer >= 0: this command's first worker index "
                       "(sampler seed study.seed + index); give each machine's command its own range")


def plan_workers(workers: int, remaining: int, log=print) -> int:
    """How many workers to start: ``workers``, but never more than the architectures left to score (said in one line)."""
    if workers > 1 and remaining < workers:
        if remaining == 0:
            log(f"search: workers={workers} but nothing is left to score; writing the results")
        else:
            log(f"search: workers={workers} is more than the {remaining} architecture(s) left to score; starting {remaining}")
        return remaining
    return workers


# --------------------------------------------------------------------------- checks before any work


def _check_study(study: StudyConfig, proxies: list[str]) -> bool:
    """Refuse impossible study settings; return whether a proxy needs the ensemble's reference."""
    if isinstance(study.trials, bool) or not isinstance(study.trials, int) or study.trials < 1:
        raise DasError(f"study.trials={study.trials!r} must be a positive integer: the study's total trials (rerunning resumes up to it)")
    for name in proxies:
        PROXIES.get(name)
    needed = max(PROXIES.get(name).min_batches for name in proxies)
    if study.probe_batches < needed:
        hungry = [n for n in proxies if PROXIES.get(n).min_batches > study.probe_batches]
        raise DasError(f"study.probe_batches={study.probe_batches} but {hungry} need {needed}; set --study.probe_batches {needed}")
    needs_reference = any(PROXIES.get(name).needs_reference for name in proxies)
    if needs_reference and study.reference_size < 2:
        raise DasError(f"study.reference_size={study.reference_size}; the ensemble's reference needs at least 2 architectures (100 is a good size)")
    return needs_reference


def make_space(cfg: SpaceConfig) -> tuple[SearchSpace, dict[str, Any]]:
    """The search space and its full arguments (``space.args`` over the space's own defaults).

    Unknown argument names are refused with the accepted ones; the full arguments are what the
    run directory remembers, so ``{C: 16}`` and ``{C: 16, N: 5}`` count as the same space. They
    are the built space's own ``space_args`` (what its specs record), not the signature's
    defaults: a default of None that the space resolves (timm's ``model``) is stored resolved,
    so naming it explicitly (``model: resnet18``) is the same space.
    """
    cls = SPACES.get(cfg.name)
    args = dict(cfg.args or {})
    params = [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:]]
    named = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        for key in args:
            if key not in named:
                hint = close_matches_hint(str(key), named)
                hint = f"{hint} " if hint.startswith("did you mean") else ""
                raise DasError(f"space.args has unknown key {key!r} for space {cfg.name!r}: {hint}accepted keys: {', '.join(named) or 'none'}")
    built = cls(**args)
    return built, json.loads(json.dumps(dict(built.space_args)))  # lists, not tuples: the form the storage gives back


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".das-write-test-"):
            pass
    except OSError as err:
        raise DasError(f"run_dir={str(run_dir)!r} is not writable ({err.strerror or err}); choose another --run_dir") from None


def _runs(model: torch.nn.Module, x: torch.Tensor) -> str | None:
    """None if ``model`` runs on ``x``, else why not."""
    try:
        with torch.no_grad():
            model(x)
    except (RuntimeError, ValueError) as err:
        return " ".join(str(err).split())[:120]
    return None


def _check_space_runs(space: SearchSpace, name: str, args: dict[str, Any], num_classes: int, sample: torch.Tensor, image_size: int | None) -> None:
    """Refuse images too small for the space's networks (say the smallest side that works)."""
    spec = space.smallest() if hasattr(space, "smallest") else random_members(space, 0)()
    model = spec.build(num_classes).eval()  # eval: BatchNorm of a 1×1 map on 2 images is not the question
    why = _runs(model, sample)
    if why is None:
        return
    c, h, w = sample.shape[1:]
    least = next((s for s in range(max(h, w) + 1, 257) if _runs(model, sample.new_zeros(2, c, s, s)) is None), None)
    need = f"they need at least {least}×{least}" if least else "no size up to 256 works"
    raise DasError(
        f"data.image_size={image_size} gives {h}×{w} images, too small for {name} students with {args} ({why}); "
        f"{need}: raise data.image_size (null keeps the dataset's own size)"
    )


def _check_budget_values(budget: BudgetConfig) -> None:
    """Refuse a budget that is not a limit: each one is positive, or null for none."""
    for key in ("max_params", "max_flops"):
        value = getattr(budget, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DasError(f"budget.{key}={value!r} must be a positive integer, or null for no limit")
    value = budget.max_latency_ms
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if value is not None and not ok:
        raise DasError(f"budget.max_latency_ms={value!r} must be a positive number of milliseconds (one forward pass at "
                       "study.probe_batch_size on the search device), or null for no limit")


#: Members drawn to check a budget against a space that cannot name its smallest member.
BUDGET_DRAWS = 32


def _check_budget_reachable(space, name: str, budget: BudgetConfig, num_classes: int, input_shape: tuple[int, ...], seed: int = 0) -> None:
    """Fail before any work when no candidate can be within the params/FLOPs budget.

    ``space.smallest()`` is the member with the fewest parameters (for nb201, a cell of skips
    and no convolutions, the fewest FLOPs too). A space without one (a user's define-by-run
    function) has :data:`BUDGET_DRAWS` random members sized on the meta device instead: if
    none is within the budget, it is refused; if a few are, the search stops once it has found
    them all (see :mod:`das.search.objective`).
    """
    if budget.max_params is None and budget.max_flops is None:
        return
    shape = "×".join(map(str, input_shape))
    if hasattr(space, "smallest"):
        smallest: ArchSpec = space.smallest()
        model = smallest.build(num_classes)
        params = count_params(model)
        if budget.max_params is not None and params > budget.max_params:
            raise DasError(f"budget.max_params={budget.max_params} is below the smallest candidate of {name} ({smallest}: {params} params); raise the budget")
        if budget.max_flops is not None:
            flops = count_flops(model, input_shape)
            if flops > budget.max_flops:
                raise DasError(f"budget.max_flops={budget.max_flops} is below the smallest candidate of {name} ({smallest}: {flops} FLOPs on {shape} images); raise the budget")
        return
    draw = random_members(space, seed)
    sizes = []
    for _ in range(BUDGET_DRAWS):
        spec = draw()
        params = meta_params(lambda: spec.build(num_classes))
        if params is not None and budget.max_params is not None and params > budget.max_params:
            sizes.append((params, None))
            continue
        with torch.device("meta"):
            model = spec.build(num_classes)
        flops = count_flops(model, input_shape)
        params = count_params(model)
        if (budget.max_params is None or params <= budget.max_params) and (budget.max_flops is None or flops <= budget.max_flops):
            return
        sizes.append((params, flops))
    least_params = min(p for p, _ in sizes)
    least_flops = min((f for _, f in sizes if f is not None), default=None)
    least = f"the smallest has {least_params} params" + (f" and {least_flops} FLOPs on {shape} images" if least_flops is not None else "")
    raise DasError(f"{_budget_text(budget, ('max_params', 'max_flops'))} is below every one of {BUDGET_DRAWS} random members of {name} ({least}); raise the budget")


def _budget_text(budget: BudgetConfig, keys: tuple[str, ...] = ("max_params", "max_flops", "max_latency_ms")) -> str:
    return ", ".join(f"budget.{k}={getattr(budget, k)}" for k in keys if getattr(budget, k) is not None)


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
        if trial._trial_id not in cache:
            arch = trial.user_attrs.get("arch")
            cache[trial._trial_id] = space.canonical(ArchSpec.from_json(arch)) if arch else None
        return cache[trial._trial_id]

    return key_of


# --------------------------------------------------------------------------- resuming


def score_settings(data: DasDataModule, teacher: TeacherConfig, space_name: str, space_args: dict[str, Any],
                   budget: BudgetConfig, study: StudyConfig, needs_reference: bool, calibrate: CalibrateConfig | None = None,
                   objective: str | None = None, space_source: str | None = None) -> dict[str, Any]:
    """Every setting that changes a stored score or whether it is within budget, as dotted keys.

    A resumed study must have been scored under the same values: its old and new trials are
    compared with each other. ``study.report`` is not here: proxies a resumed study reports anew
    are computed for the stored candidates (see :func:`_remember_scored`). ``objective`` is the
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
        "data": {k: h.get(k) for k in ("dataset", "root", "train_file", "image_size", "mean", "std", "val_fraction", "seed")},
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


def _check_same_settings(optuna_study: optuna.Study, settings: dict[str, Any]) -> None:
    """Refuse to resume a study that was scored under other settings: its scores would not compare.

    Settings the run directory has not stored (a run of an older das, an option the search did
    not use then) are taken as they are now.
    """
    stored = flatten(optuna_study.user_attrs.get("settings") or {})
    changed = [key for key in settings if key in stored and stored[key] != settings[key]]
    if changed:
        diff = "; ".join(f"{k}: was {stored[k]!r}, now {settings[k]!r}" for k in changed)
        raise DasError(f"study {optuna_study.study_name!r} in this run_dir was run with other settings ({diff}); use a new --run_dir or the original settings")


def _store_settings(optuna_study: optuna.Study, settings: dict[str, Any]) -> None:
    """Remember the settings, only once the run is known to be valid (a typo must not stick)."""
    stored = flatten(optuna_study.user_attrs.get("settings") or {})
    if {**stored, **settings} != stored:
        optuna_study.set_user_attr("settings", {**stored, **settings})


#: Study user attr: the sha256 of the teacher file the study's trials were scored with (shared storages).
TEACHER_FILE_ATTR = "teacher_file"


def _file_digest(path: str | Path) -> str | None:
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_teacher_here(optuna_study: optuna.Study, cfg: TeacherConfig, run_dir: Path) -> None:
    """On a shared study, refuse before any training to train a second teacher: the first one's scores would not compare.

    A machine joining a study another machine started has no ``teacher/teacher.pt`` of its own;
    training one here (other hardware, other float rounding) would give other weights.
    """
    stored = optuna_study.user_attrs.get(TEACHER_FILE_ATTR)
    here = run_dir / "teacher" / "teacher.pt"
    if stored and cfg.checkpoint is None and not here.is_file():
        raise DasError(
            f"study {optuna_study.study_name!r} was scored with a teacher trained elsewhere ({stored.get('path')}, "
            f"sha256 {str(stored.get('sha256'))[:12]}); copy that file to {here} or give --teacher.checkpoint, "
            "rather than train another teacher here"
        )


def _check_same_teacher(optuna_study: optuna.Study, checkpoint: str, run_dir: Path) -> None:
    """On a shared study, the teacher file must be the one its trials were scored with (its sha256 is kept in the study)."""
    digest = _file_digest(checkpoint)
    if digest is None:
        return
    stored = optuna_study.user_attrs.get(TEACHER_FILE_ATTR)
    if not stored:
        optuna_study.set_user_attr(TEACHER_FILE_ATTR, {"sha256": digest, "path": str(Path(checkpoint).resolve())})
    elif stored.get("sha256") != digest:
        raise DasError(
            f"teacher file {checkpoint} (sha256 {digest[:12]}) is not the one study {optuna_study.study_name!r} was scored with "
            f"({stored.get('path')}, sha256 {str(stored.get('sha256'))[:12]}); copy that file here or use a new study.study_name"
        )


def _teacher_accuracy(optuna_study: optuna.Study, cfg: TeacherConfig, model: torch.nn.Module, checkpoint: str,
                      data: DasDataModule, device: torch.device, log) -> float:
    """Top-1 accuracy (%) on the data module's test split, the split train.py tests students on.

    Measured once per teacher file and test split and kept in the study, so a resume does not
    pay for it again.
    """
    path = Path(checkpoint)
    teacher_file = f"{path.resolve()}|{path.stat().st_size}|{path.stat().st_mtime_ns}" if path.is_file() else checkpoint
    test_split = {k: data.hparams.get(k) for k in ("dataset", "root", "test_file", "image_size", "mean", "std")}
    key = json.dumps([teacher_file, test_split], sort_keys=True)
    cached = optuna_study.user_attrs.get("teacher_test_acc")
    if isinstance(cached, dict) and cached.get("teacher") == key:
        acc = cached["acc"]
    else:
        acc = top1_accuracy(model, data.test_dataloader(), device)
        optuna_study.set_user_attr("teacher_test_acc", {"teacher": key, "acc": acc})
    log(f"teacher: {cfg.spec} {acc:.2f}% top-1 on the {len(data.subset('test'))} held-out test images (the split train.py tests students on)")
    return acc


def _remember_scored(optuna_study: optuna.Study, objective: Objective, key_of, log=print) -> None:
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
