"""Calibrate a search on the user's own space: distil a few students, rank every proxy, search with the best.

No zero-cost proxy ranks every space well (issue "Distillation ground truth", section 5), and
only the user's own teacher, data and space can say which works there. With
``calibrate.students`` K > 0, before the first trial the search

1. draws K distinct random members of the space within the budget (seeded by ``calibrate.seed``);
2. distils each from the search's teacher for ``calibrate.epochs`` epochs with das.calibrate's
   recipe (its :class:`~das.calibrate.trainer.Recipe` defaults at the data's batch size: CE + KD
   + the cosine feature loss, on the teacher's cached outputs; no run alone) on the search's
   training images, and tests it on the **validation** split (the test split never chooses
   anything);
3. scores each with every registered proxy that can run here, exactly as the search would
   (same probe batches, same initial weights, same teacher reference);
4. fits the selection rule the search then ranks by, with
   :func:`das.calibrate.selection.fit_selection` on the scores it combines
   (:data:`das.calibrate.selection.COMBINED`): ``params``, one of those scores, or their ridge
   combination, whichever regrets least under cross-validation on the K (ties: ``params``). A
   single score is searched as that proxy; the ridge as the objective ``selection``, computed
   from the proxies it reads. Students that diverged are left out of the fit; when the rest
   cannot be fitted (fewer than 3, or all at one accuracy), the configured ``study.objective``
   is kept and the reason said.

Each student's record (accuracy and scores) is appended to ``RUN_DIR/calibration/students.jsonl``
as it finishes; a rerun skips the students there and refuses a file written with other settings,
so a finished calibration is read back, not redone, and the rule refitted from it is the same
(the fit is deterministic); processes sharing a run directory calibrate once (the others wait
for it, then read it back). The rule is written to ``RUN_DIR/selection.json``, every proxy's
Kendall τ with the accuracies to ``RUN_DIR/calibration.csv``, the students to
``RUN_DIR/calibration_students.csv`` and the rule's value against each student's distilled
accuracy to ``RUN_DIR/calibration.png``.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from das.calibrate.calibration import ProxyRank, plot_calibration, rank_proxies, write_ranking
from das.calibrate.data import PopulationData
from das.calibrate.population import population_settings
from das.calibrate.results import ResultsFile
from das.calibrate.selection import COMBINED, Selection, fit_selection
from das.calibrate.teacher_cache import build_teacher_cache, cached_modules
from das.calibrate.trainer import Recipe, init_student, train_student
from das.data import DasDataModule
from das.errors import DasError
from das.features import feature_points
from das.proxies import PROXIES
from das.proxies.context import Batch
from das.proxies.diswot import DisWOTReference
from das.proxies.ensemble import EnsembleReference
from das.report.provenance import now_iso
from das.search.config import BudgetConfig, CalibrateConfig, StudyConfig
from das.search.short_runs import check_short_runs, is_integer, population_data
from das.search.locks import exclusive
from das.search.reference import in_budget_members
from das.search.trial_objective import TrialObjective
from das.spaces import SearchSpace
from das.spec import ArchSpec
from das.stats import count_flops, count_params

KIND = "das.search.calibration"
RESULTS = Path("calibration") / "students.jsonl"
RANKING = "calibration.csv"
STUDENTS = "calibration_students.csv"
PLOT = "calibration.png"
SELECTION = "selection.json"
#: The objective name under which a fitted combination is searched (a single score keeps its proxy name).
SELECTION_OBJECTIVE = "selection"
#: Random draws allowed per wanted student before the budget is said to leave too few.
DRAWS_PER_STUDENT = 50
#: Train in channels-last, as the population trainer does by default (faster convolutions on the CPU).
CHANNELS_LAST = True


@dataclass
class Calibration:
    """What a calibration found.

    Attributes:
        selection: the rule fitted on the students, or None when the configured objective is kept.
        objective: what the search ranks by: a proxy's name, or ``selection`` for a fitted combination.
        reason: one line saying what was chosen and why.
        ranking: every proxy's Kendall τ with the distilled accuracies, highest first.
        skipped: proxies that could not run here, and why.
        students: one record per student: arch, params, flops, distilled_acc, scores, ...
        minutes: the calibration's cost: its students' training and scoring time.
    """

    selection: Selection | None
    objective: str
    reason: str
    ranking: list[ProxyRank]
    skipped: dict[str, str]
    students: list[dict[str, Any]]
    minutes: float

    @property
    def features(self) -> list[str]:
        """The proxies the objective reads."""
        return list(self.selection.features) if self.selection is not None and self.objective == SELECTION_OBJECTIVE else [self.objective]

    def value(self, scores: Mapping[str, float]) -> float:
        """The fitted combination's value from one candidate's proxy scores (NaN when one is missing or not finite)."""
        assert self.selection is not None
        if any(f not in scores for f in self.selection.features):
            return math.nan
        value = float(self.selection.objective({f: [scores[f]] for f in self.selection.features})[0])
        return value if math.isfinite(value) else math.nan

    def summary(self) -> dict[str, Any]:
        """For search_summary.json."""
        return {"objective": self.objective, "reason": self.reason, "students": len(self.students), "minutes": round(self.minutes, 2),
                "rule": None if self.selection is None else self.selection.to_dict(), "skipped": self.skipped,
                "files": [SELECTION, RANKING, STUDENTS, PLOT, str(RESULTS)]}


# --------------------------------------------------------------------------- checks before any work


def check_calibrate(cfg: CalibrateConfig, val_fraction: float) -> None:
    """Refuse calibrate values that cannot work, one line each, before anything is loaded."""
    if not is_integer(cfg.students) or cfg.students < 0 or cfg.students in (1, 2):
        raise DasError(f"calibrate.students={cfg.students!r} must be 0 (off) or at least 3: a selection rule cannot "
                       "be judged on fewer students (8 beat size on the committed populations: docs/results.md)")
    if cfg.students:
        check_short_runs("calibrate", cfg, val_fraction, "calibration student")


def check_calibration_data(cfg: CalibrateConfig, data: DasDataModule) -> None:
    """Refuse a calibration the loaded data cannot hold (too few validation or training images)."""
    if not cfg.students:
        return
    train, val = data.split_size("train"), data.split_size("val")
    if val < 2:
        raise DasError(f"calibration ranks its students on the validation split, which has {val} image(s); raise data.val_fraction")
    if cfg.train_images is not None and cfg.train_images > train:
        raise DasError(f"calibrate.train_images={cfg.train_images} but the training split has {train} images; lower it or set null for all")


def calibrate_settings(cfg: CalibrateConfig) -> dict[str, Any]:
    """What of the calibration a run directory remembers: off, or everything that makes its choice."""
    if not cfg.students:
        return {"students": 0}
    return {"students": cfg.students, "epochs": cfg.epochs, "seed": cfg.seed, "train_images": cfg.train_images}


def runnable_proxies(batches: int, ensemble: bool) -> tuple[list[str], dict[str, str]]:
    """The registered proxies a calibration can score with ``batches`` probe batches, and why the others cannot."""
    names, skipped = [], {}
    for name in PROXIES.names():
        proxy = PROXIES.get(name)
        if proxy.min_batches > batches:
            skipped[name] = f"{proxy.min_batches} probe batches needed (set --study.probe_batches {proxy.min_batches})"
        elif proxy.needs_reference and not ensemble:
            skipped[name] = "no reference population to rank against"
        else:
            names.append(name)
    return names, skipped


# --------------------------------------------------------------------------- the calibration


def calibrate(
    cfg: CalibrateConfig,
    *,
    run_dir: Path,
    data: DasDataModule,
    teacher_name: str,
    teacher: torch.nn.Module,
    space: SearchSpace,
    budget: BudgetConfig,
    study: StudyConfig,
    batches: list[Batch],
    reference: DisWOTReference,
    teacher_init: str,
    ensemble_reference: EnsembleReference | None,
    num_classes: int,
    input_shape: tuple[int, int, int],
    device: torch.device,
    log: Callable[[str], None] = print,
) -> Calibration:
    """Distil ``cfg.students`` in-budget students, rank every proxy against them, choose the search's objective."""
    proxies, skipped = runnable_proxies(len(batches), ensemble_reference is not None)
    for why in dict.fromkeys(skipped.values()):
        log(f"calibration: not ranking {', '.join(n for n, w in skipped.items() if w == why)}: {why}")
    specs = _draw_students(cfg, space, budget, num_classes, input_shape)
    population = population_data(data, cfg.train_images, cfg.seed)
    recipe = Recipe(epochs=cfg.epochs, batch_size=data.hparams["batch_size"])
    settings = population_settings(teacher_name, teacher, population, recipe, cfg.seed, CHANNELS_LAST)
    settings.update(kind=KIND, scores={"probe": {"batch_size": study.probe_batch_size, "batches": study.probe_batches, "seed": study.seed},
                                       "teacher_init": teacher_init,
                                       "ensemble_reference": None if ensemble_reference is None else ensemble_reference.settings})
    path = run_dir / RESULTS
    scorer = TrialObjective(space, batches, reference, proxies, budget, num_classes, input_shape, device, study.seed, ensemble_reference)
    with exclusive(path.with_name(".calibrating.lock")):
        try:
            results = ResultsFile(path, settings)
        except DasError as err:
            raise DasError(f"{err}; a calibration's settings are calibrate.*, the data, the teacher and the probe batches: use a new --run_dir") from None
        todo = [s for s in specs if results.find(key=s.to_json()) is None]
        if todo:
            log(f"calibration: distilling {len(todo)} of {len(specs)} students for {cfg.epochs} epoch(s) each on {len(population.train)} "
                f"training images, ranked on the {len(population.test)} validation images ({path})")
            _train(todo, results, population, recipe, teacher, scorer, cfg.seed, num_classes, device, log)
        else:
            log(f"calibration: all {len(specs)} students already distilled in {path}; ranking them again")
        records = [_complete(results, results.find(key=s.to_json()), scorer) for s in specs]

    accuracy = [r["distilled_acc"] for r in records]
    scores = {name: [r["scores"].get(name, float("nan")) for r in records] for name in proxies}
    ranking = rank_proxies(scores, accuracy)
    minutes = sum(r.get("seconds", 0.0) for r in records) / 60
    calibration = choose_rule(records, proxies, study.objective, skipped, ranking, minutes, cfg.seed)
    write_ranking(ranking, run_dir / RANKING)
    _write_students(records, proxies, run_dir / STUDENTS)
    _write_selection(calibration, run_dir / SELECTION)
    fitted = [r for r in records if _usable(r)]
    if calibration.selection is not None and fitted:
        value = calibration.selection.objective({f: [r["scores"].get(f, math.nan) for r in fitted] for f in calibration.selection.features})
        plot_calibration(value, [r["distilled_acc"] for r in fitted], calibration.selection.rule.describe(), run_dir / PLOT)
    log(f"calibration: {calibration.reason}; the calibration cost {minutes:.1f} min of training and scoring")
    return calibration


def _usable(record: Mapping[str, Any]) -> bool:
    """A student whose distilled accuracy can enter the fit: it trained without diverging to a finite accuracy."""
    return not record.get("diverged") and math.isfinite(float(record.get("distilled_acc", math.nan)))


def choose_rule(records: list[dict[str, Any]], proxies: list[str], configured: str, skipped: dict[str, str],
                ranking: list[ProxyRank], minutes: float, seed: int) -> Calibration:
    """Fit the selection rule on the usable students, or keep ``configured`` with the reason (see the module docstring)."""
    usable = [r for r in records if _usable(r)]
    left_out = len(records) - len(usable)
    dropped = f"{left_out} diverged student(s) left out; " if left_out else ""
    features = [f for f in COMBINED if f in proxies]
    scores = {f: [r["scores"].get(f, math.nan) for r in usable] for f in features}
    try:
        selection = fit_selection(scores, [r["distilled_acc"] for r in usable], seed=seed)
    except DasError as err:
        reason = f"{dropped}{err}; keeping study.objective={configured}"
        return Calibration(None, configured, reason, ranking, skipped, records, minutes)
    objective = SELECTION_OBJECTIVE if selection.rule.weights is not None else selection.name
    reason = f"{dropped}searching with {objective}: {selection.describe()}"
    return Calibration(selection, objective, reason, ranking, skipped, records, minutes)


def _write_selection(calibration: Calibration, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"objective": calibration.objective, "reason": calibration.reason,
                               "rule": None if calibration.selection is None else calibration.selection.to_dict()}, indent=2) + "\n")
    tmp.replace(path)


def _draw_students(cfg: CalibrateConfig, space: SearchSpace, budget: BudgetConfig, num_classes: int,
                   input_shape: tuple[int, int, int]) -> list[ArchSpec]:
    max_draws = DRAWS_PER_STUDENT * cfg.students
    specs = []
    for spec, _, _ in in_budget_members(space, budget, num_classes, input_shape, cfg.seed, max_draws):
        specs.append(spec)
        if len(specs) == cfg.students:
            return specs
    raise DasError(f"found only {len(specs)} distinct students within the budget ({budget}) in {max_draws} random draws; "
                   f"lower calibrate.students (now {cfg.students}) or loosen the budget")


def _train(specs: list[ArchSpec], results: ResultsFile, population: PopulationData, recipe: Recipe, teacher: torch.nn.Module,
           scorer: TrialObjective, seed: int, num_classes: int, device: torch.device, log) -> None:
    """Distil each student, score it, and append its record at once (a kill loses only the student in training)."""
    started = time.perf_counter()
    example = population.normalise(population.train.images[:2]).to(device)
    modules = cached_modules(recipe.feature_pairs, feature_points(teacher, example)) if recipe.uses_features else []
    cache = build_teacher_cache(teacher, population, modules, recipe.augment, recipe.views, seed, recipe.map_dtype, device=device,
                                spill_dir=results.path.parent)  # a cache past MEMORY_BYTES is mapped from (unlinked) files there
    log(f"calibration: teacher outputs cached for {len(cache)} images ({cache.nbytes / 1e6:.1f} MB {cache.where}) "
        f"in {time.perf_counter() - started:.1f} s")
    with tqdm(total=len(specs), desc="calibration", unit="student") as bar:
        for spec in specs:
            student = init_student(lambda: spec.build(num_classes), seed)
            params, flops = count_params(student), count_flops(student, population.input_shape)
            run = train_student(student, cache, population, recipe, seed, True, device, CHANNELS_LAST)
            results.add({
                "key": spec.to_json(), "arch": str(spec), "spec": spec.to_dict(), "params": params, "flops": flops,
                "distilled_acc": run.acc, "diverged": run.diverged, "seconds": run.seconds, "init_digest": run.init_digest,
                "scores": _scores(scorer, spec, scorer.proxies), "seed": seed, "threads": torch.get_num_threads(),
                "device": str(device), "date": now_iso(),
            })
            bar.set_postfix_str(f"last {run.acc:.1f}%", refresh=False)
            bar.update()


def _scores(scorer: TrialObjective, spec: ArchSpec, proxies: list[str]) -> dict[str, float]:
    """``proxies`` of ``spec`` as the search scores them: fused, or one by one if one fails (nan: τ skips it)."""
    try:
        return scorer.score(scorer.build(spec), proxies)
    except DasError:  # a non-finite score of one proxy on this student
        pass
    scores = {}
    for name in proxies:
        try:
            scores[name] = scorer.score(scorer.build(spec), [name])[name]
        except DasError:
            scores[name] = float("nan")
    return scores


def _complete(results: ResultsFile, record: dict[str, Any], scorer: TrialObjective) -> dict[str, Any]:
    """``record`` with every proxy scored: proxies registered after it was written are scored now and appended."""
    missing = [p for p in scorer.proxies if p not in record["scores"]]
    if not missing:
        return record
    spec = ArchSpec.from_json(record["key"])
    record = {**record, "scores": {**record["scores"], **_scores(scorer, spec, missing)}}
    results.add(record)
    return record


def _write_students(records: list[dict[str, Any]], proxies: list[str], path: Path) -> None:
    """One row per student: size, distilled accuracy, every proxy's score (the params and flops proxies are the size columns)."""
    proxies = [p for p in proxies if p not in ("params", "flops")]
    columns = ["arch", "params", "flops", "distilled_acc", "diverged", *proxies, "spec"]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in records:
            writer.writerow({"arch": r["arch"], "params": r["params"], "flops": r["flops"], "distilled_acc": r["distilled_acc"],
                             "diverged": r["diverged"], **{p: r["scores"].get(p) for p in proxies}, "spec": json.dumps(r["spec"])})
    tmp.replace(path)
