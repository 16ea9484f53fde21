"""Which zero-cost proxy picks students that distil well? Every proxy against distilled accuracy.

Section 3 of the issue "Distillation ground truth". ``benchmarks/distill_ground_truth.py`` trains a
population of students distilled from a ResNet-56 teacher and alone; this script scores each
trained student at its initialisation with every registered zero-cost proxy and with the DisWOT
variants of ``benchmarks/diswot_variants.py``, and asks of every score what NB201's stand-alone
accuracies could not: does it rank students by their accuracy *after distillation*? DisWOT claims
to; the ensemble is the proxy with the stand-alone evidence behind it (docs/results.md, "Proxies on
NAS-Bench-201"); ``params`` is the baseline every score must beat.

**Scoring** (as the NB201 benchmarks score, on the ground truth's own data and teacher): seeded
probe batches of ``--batch-size`` images from the summary's training file (``--data``; two
batches when zico or the ensemble is asked for), normalised, not augmented, resized to the
summary's image size as its students were trained; each student built by the summary's space
(its ``population`` and ``space_args``) for the data's classes right after
``torch.manual_seed(--seed)``, in train mode. DisWOT compares with the summary's teacher, read
once on the first probe batch, as a search does (a seeded random re-initialisation:
``das.proxies.DEFAULT_TEACHER_INIT``). The variants (teacher random/trained × student BatchNorm
train/eval × diswot/relation/semantic) come from the same build and the same references, so
``diswot@teacher_random/bn_train`` equals ``diswot``. ``ensemble`` is ranked over the trained
population itself, as AZ-NAS reports it. A proxy that raises or returns a non-finite value on a
student is counted as its failure and left out of its correlations (``das.report.scoring``).
The ``params`` row is the summary's parameter count, the same count as the ``params`` proxy
(``das.stats.count_params`` of the same build), so that proxy is not reported twice.

**Correlations**, over the trained students, for every score: Spearman ρ and Kendall τ with
the distilled accuracy, with the gain (distilled − alone) and with the accuracy alone; what the
score knows beyond size: the partial ρ with distilled accuracy given log params and the mean ρ
inside params quartiles; and the criterion docs/decisions.md fixed for choosing the default objective
before any figure: the mean over the three budgets below of the Spearman ρ with distilled
accuracy among the students within the budget (``in_budget_vs_distilled_acc``), with how sure
its lead over ``params`` is (``in_budget_margin_over_params``: a ``--bootstrap`` over the students,
budgets fixed; reported, not part of the rule). With ``ensemble``
and ``diswot`` both scored, the one declared combination ``ensemble+diswot`` (the ensemble's
log-rank rule over its six members and diswot, over the trained population) is a column too.

**Budget picks**, the figure a user feels: a search returns the best-scoring student under a
parameter budget. Budgets: the 25th, 50th and 75th percentiles of the trained students' params
(``numpy.percentile``, linear interpolation), so each holds about a quarter, half and three
quarters of the population whatever the space. Per budget (students with params ≤ budget): the
best distilled accuracy in it (oracle), the largest student's (ties: their mean), the
expected accuracy of a random pick (the mean), and per score the distilled accuracy of its
top-scoring student (higher is better for every das score; ties: their mean) and its regret
(oracle − pick).

    python -m benchmarks.ground_truth_proxies --ground-truth benchmarks/results/distill_ground_truth_nb201.json
    python -m benchmarks.ground_truth_proxies --ground-truth benchmarks/results/distill_ground_truth_resnet_cifar.json

Per-student scores go to ``OUT.scores.csv`` as they come; ``--resume`` continues an interrupted
run or scores the students a longer ground-truth run has trained since.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn
from tqdm import tqdm

from benchmarks.common import code_version, fmt, machine_info, now_iso, print_table, scored_proxies, set_threads, write_json
from benchmarks.common import DISWOT_VARIANTS as VARIANTS
from benchmarks.common import diswot_teacher_references as teacher_references
from benchmarks.common import diswot_variant_scores as variant_scores
from das.cli import guarded
from das.data import load_dataset, probe_batches
from das.errors import DasError
from das.paths import shared_data_dir
from das.proxies import DEFAULT_TEACHER_INIT, ENSEMBLE_MEMBERS, DisWOTReference
from das.proxies.context import Batch
from das.report.inputs import batches_needed, require_file, resolve_proxies
from das.report.ranking import log_rank_ensemble, partial_rank_correlation, rank_correlation, within_bins_correlation
from das.report.scores_file import ScoredArch, ScoresFile
from das.report.scoring import failure_summary, score_safely
from das.spaces import SPACES, create_space
from das.spaces.base import SearchSpace
from das.spec import ArchSpec


BENCHMARK = "ground_truth_proxies"
PERCENTILES = (25, 50, 75)
BOOTSTRAP_RESAMPLES = 2000  # of the margin over params (reported, not a criterion)
MIN_STUDENTS = 3  # fewer pairs give no rank correlation worth the name
COMBINATION = "ensemble+diswot"  # log-rank rule over the ensemble's members and diswot
BUDGET_RULE = ("budgets: the 25th/50th/75th percentiles of the trained students' params (numpy.percentile, linear); "
               "in budget: params <= budget; oracle: best distilled_acc in budget; largest: distilled_acc of the largest student "
               "in budget (ties: mean); random: mean distilled_acc in budget; pick: distilled_acc of a score's top student "
               "(ties: mean; failed scores rank last); regret: oracle - pick")


@dataclass(frozen=True)
class Student:
    """A trained student of the ground truth: what it is and how it trained."""

    key: str  # the spec's JSON, as distill_ground_truth keys it
    spec: ArchSpec
    params: int
    distilled_acc: float
    alone_acc: float
    gain: float


@dataclass(frozen=True)
class GroundTruth:
    population: str
    space: str  # the registered space the students come from (a population is a space with fixed arguments)
    settings: dict[str, Any]
    students: list[Student]  # trained ones only, in the summary's order
    untrained: int
    teacher_test_acc: float | None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ground-truth", required=True, help="summary JSON of benchmarks/distill_ground_truth.py")
    p.add_argument("--data", default=None, help=".npz the probe batches are drawn from (default: the summary's train_file under shared/data/cifar10)")
    p.add_argument("--teacher-checkpoint", default=None, help="the teacher's weights (default: the summary's teacher_checkpoint)")
    p.add_argument("--batch-size", type=int, default=64, help="probe images per batch")
    p.add_argument("--seed", type=int, default=0, help="seeds the probe batches, every student's initialisation and the random teacher")
    p.add_argument("--proxies", default="all", help="comma-separated proxies or 'all'")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP_RESAMPLES, help="resamples of the students for the criterion's margin over params (reported only)")
    p.add_argument("--resume", action="store_true", help="continue the scores file (students scored there are not scored again)")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/ground_truth_proxies_<population>.json)")
    return p.parse_args(list(argv))


# --------------------------------------------------------------------------- inputs


def read_ground_truth(path: str | Path) -> GroundTruth:
    """The summary's trained students and settings, checked so a bad file fails in one line before any scoring."""
    p = require_file(path, "--ground-truth", "a summary written by benchmarks/distill_ground_truth.py (e.g. benchmarks/results/distill_ground_truth_nb201.json)")
    try:
        summary = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise DasError(f"--ground-truth {p} is not JSON ({err}); give a summary written by benchmarks/distill_ground_truth.py") from None
    if not (isinstance(summary, dict) and isinstance(summary.get("students"), list) and isinstance(summary.get("settings"), dict)
            and summary.get("population")):
        raise DasError(f"--ground-truth {p} is not a distill_ground_truth summary (it needs 'population', 'students' and 'settings')")
    population, students, untrained, spaces = summary["population"], [], 0, set()
    for i, s in enumerate(summary["students"]):
        if s.get("trained", True) is False:
            untrained += 1
            continue
        missing = [k for k in ("spec", "params", "distilled_acc", "alone_acc", "gain") if s.get(k) is None]
        if missing:
            raise DasError(f"--ground-truth {p}: student {i} lacks {missing}; rerun distill_ground_truth.py to rewrite the summary")
        spec = ArchSpec.from_dict(s["spec"])
        if population in SPACES.names() and spec.space != population:  # a population named after its space
            raise DasError(f"--ground-truth {p}: student {i} is a {spec.space!r} architecture in a {population!r} population")
        spaces.add(spec.space)
        if len(spaces) > 1:
            raise DasError(f"--ground-truth {p}: student {i} is a {spec.space!r} architecture, the ones before it "
                           f"{sorted(spaces - {spec.space})}: a population comes from one space")
        students.append(Student(spec.to_json(), spec, int(s["params"]), float(s["distilled_acc"]), float(s["alone_acc"]), float(s["gain"])))
    if len(students) < MIN_STUDENTS:
        raise DasError(f"--ground-truth {p} has {len(students)} trained students; ranking needs at least {MIN_STUDENTS}: "
                       "let distill_ground_truth.py train more (rerun its command) and try again")
    teacher = summary.get("teacher") or {}
    return GroundTruth(population, spaces.pop(), summary["settings"], students, untrained, teacher.get("test_acc"))


def make_space(space: str, space_args: Mapping[str, Any]) -> SearchSpace:
    try:
        return create_space(space, **space_args)
    except TypeError as err:
        raise DasError(f"the summary's space_args {dict(space_args)} do not fit the {space} space ({err})") from None


def load_probe_batches(path: str | Path, batch_size: int, num_batches: int, seed: int, image_size: int) -> tuple[list[Batch], int]:
    """Seeded probe batches at the students' image size, and the data's class count (what they were built for)."""
    p = require_file(path, "--data", "an .npz with x (uint8 N×H×W×C) and y, e.g. ../shared/data/cifar10/train_jpeg.npz")
    # As distill_ground_truth loads its data: 32 keeps the stored size, another size resizes.
    splits = load_dataset("npz", train_file=p, test_file=p, image_size=None if image_size == 32 else image_size)
    return probe_batches(splits, batch_size=batch_size, num_batches=num_batches, seed=seed, split="train"), splits.num_classes


# --------------------------------------------------------------------------- scoring


def score_student(model: nn.Module, batches: Sequence[Batch], proxies: Sequence[str], variants: bool,
                  references: Mapping[str, DisWOTReference], seed: int) -> tuple[dict[str, float], dict[str, str]]:
    """One student's proxies and (when asked) DisWOT variants; each failure recorded, never raised."""
    values, errors = score_safely(model, batches, proxies, teacher=references[DEFAULT_TEACHER_INIT], seed=seed) if proxies else ({}, {})
    if variants:
        try:
            values.update(variant_scores(model, batches[0], references, seed))
        except Exception as err:  # noqa: BLE001 - charged to every variant column, as score_safely charges a proxy
            values.update({c: math.nan for c in VARIANTS})
            errors.update({c: f"{type(err).__name__}: {err}"[:300] for c in VARIANTS})
        errors.update({c: f"returned {values[c]}" for c in VARIANTS if not math.isfinite(values[c]) and c not in errors})
    return values, errors


def score_population(students: Sequence[Student], space: SearchSpace, num_classes: int, batches: Sequence[Batch],
                     scores: ScoresFile, references: Mapping[str, DisWOTReference], seed: int) -> None:
    """Score every student for the columns ``scores`` lacks for it, each built from ``torch.manual_seed(seed)``."""
    for s in tqdm(students, desc="scoring students", unit="student", dynamic_ncols=True):
        missing = scores.missing(s.key)
        t0 = time.perf_counter()
        torch.manual_seed(seed)  # the student's weights do not depend on what was scored before it
        model = space.build(s.spec, num_classes)
        values, errors = score_student(model, batches, [c for c in missing if c not in VARIANTS],
                                       any(c in VARIANTS for c in missing), references, seed)
        scores.add(ScoredArch(s.key, str(s.spec), time.perf_counter() - t0, values, errors))


# --------------------------------------------------------------------------- report


def score_columns(rows: Sequence[ScoredArch], students: Sequence[Student], proxies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Every reported score over the students: its kind, its values and its failures; params first (the baseline)."""
    out: dict[str, dict[str, Any]] = {"params": {"kind": "baseline", "values": [float(s.params) for s in students], "failures": {"count": 0}}}
    for name in proxies:
        if name not in ("params", "ensemble"):  # params: the baseline row, the same count
            out[name] = {"kind": "proxy", "values": [r.values[name] for r in rows], "failures": failure_summary(rows, name)}
    if "ensemble" in proxies:
        failed = sum(any(m in r.errors for m in ENSEMBLE_MEMBERS) for r in rows)
        out["ensemble"] = {"kind": "ensemble", "members": list(ENSEMBLE_MEMBERS), "population": f"the {len(rows)} trained students",
                           "values": log_rank_ensemble([r.values for r in rows], ENSEMBLE_MEMBERS).tolist(),
                           "failures": {"archs_with_a_failed_member": failed}}
    if "ensemble" in proxies and "diswot" in proxies:  # the one combination declared (docs/decisions.md) before any figure
        members = (*ENSEMBLE_MEMBERS, "diswot")
        out[COMBINATION] = {"kind": "combination", "members": list(members), "population": f"the {len(rows)} trained students",
                            "values": log_rank_ensemble([r.values for r in rows], members).tolist(),
                            "failures": {"archs_with_a_failed_member": sum(any(m in r.errors for m in members) for r in rows)}}
    for name in VARIANTS:
        out[name] = {"kind": "diswot_variant", "values": [r.values[name] for r in rows], "failures": failure_summary(rows, name)}
    return out


def correlations(values: Sequence[float], students: Sequence[Student]) -> dict[str, Any]:
    """ρ/τ with distilled accuracy, gain and accuracy alone, and what the score knows about distilled accuracy beyond size."""
    distilled = [s.distilled_acc for s in students]
    log_params = [math.log(s.params) for s in students]
    return {
        "vs_distilled_acc": rank_correlation(values, distilled),
        "vs_gain": rank_correlation(values, [s.gain for s in students]),
        "vs_alone_acc": rank_correlation(values, [s.alone_acc for s in students]),
        "partial_vs_distilled_acc_given_log_params": partial_rank_correlation(values, distilled, log_params),
        "within_params_quartiles_vs_distilled_acc": within_bins_correlation(values, distilled, log_params, bins=4),
    }


def budgets(params: Sequence[float], percentiles: Sequence[float] = PERCENTILES) -> list[float]:
    """The parameter budgets: percentiles of the population's sizes (see the module docstring)."""
    return [float(np.percentile(np.asarray(params, dtype=float), q)) for q in percentiles]


def in_budget_correlation(values: Sequence[float], params: Sequence[float], distilled_acc: Sequence[float],
                          budget_list: Sequence[float]) -> dict[str, Any]:
    """Spearman ρ with distilled accuracy among the students within each budget, and its mean over the budgets.

    The selection criterion fixed (docs/decisions.md) before any figure: what a budgeted search ranks
    is everything it may pick, so a score is judged on the in-budget students, size included.
    """
    per_budget = []
    for budget in budget_list:
        inside = [i for i, p in enumerate(params) if p <= budget]
        per_budget.append(rank_correlation([values[i] for i in inside], [distilled_acc[i] for i in inside])["spearman"])
    defined = [r for r in per_budget if r is not None]
    return {"per_budget": per_budget, "mean": statistics.fmean(defined) if len(defined) == len(per_budget) else None}


def margin_over_params(values: Sequence[float], params: Sequence[float], distilled_acc: Sequence[float], budget_list: Sequence[float],
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """How sure the criterion's lead over ``params`` is: a bootstrap over the students (budgets fixed).

    Reported beside the rule, never used by it: with 8–24 students per budget a ρ moves by
    ±0.3 between samples, so a reader needs the spread, not only the point.
    """
    x, size, acc = np.asarray(values, float), np.asarray(params, float), np.asarray(distilled_acc, float)
    rng = np.random.default_rng(seed)
    point = in_budget_correlation(x, size, acc, budget_list)["mean"]
    base = in_budget_correlation(size, size, acc, budget_list)["mean"]
    diffs = []
    for _ in range(resamples):
        i = rng.integers(0, len(x), len(x))
        diff = _fast_criterion(x[i], size[i], acc[i], budget_list) - _fast_criterion(size[i], size[i], acc[i], budget_list)
        if math.isfinite(diff):
            diffs.append(diff)
    if point is None or base is None or not diffs:
        return {"margin": None, "ci95": None, "share_above_zero": None, "resamples_defined": len(diffs)}
    return {"margin": point - base, "ci95": [float(q) for q in np.percentile(diffs, [2.5, 97.5])],
            "share_above_zero": float(np.mean(np.asarray(diffs) > 0)), "resamples_defined": len(diffs)}


def _fast_criterion(x: np.ndarray, size: np.ndarray, acc: np.ndarray, budget_list: Sequence[float]) -> float:
    """``in_budget_correlation``'s mean as Pearson ρ of average ranks (Spearman's definition), NaN where undefined."""
    per_budget = []
    for budget in budget_list:
        inside = size <= budget
        keep = inside & np.isfinite(x)
        a, b = stats.rankdata(x[keep]), stats.rankdata(acc[keep])
        if len(a) < 2 or a.std() == 0 or b.std() == 0:
            return math.nan
        per_budget.append(float(np.corrcoef(a, b)[0, 1]))
    return float(np.mean(per_budget))


def top_pick(scores: Sequence[float], distilled_acc: Sequence[float]) -> float | None:
    """Distilled accuracy of the top-scoring student (ties: their mean); None when no score is finite."""
    finite = [(s, a) for s, a in zip(scores, distilled_acc) if math.isfinite(s)]
    if not finite:
        return None
    best = max(s for s, _ in finite)
    return statistics.fmean(a for s, a in finite if s == best)


def budget_pick(params: Sequence[float], distilled_acc: Sequence[float], scores: Mapping[str, Sequence[float]], budget: float) -> dict[str, Any]:
    """What each score picks among the students with params ≤ ``budget``, against the oracle, the largest and a random pick."""
    inside = [i for i, p in enumerate(params) if p <= budget]
    if not inside:
        return {"budget_params": budget, "students": 0, "oracle": None, "largest": None, "random": None,
                "picks": {name: None for name in scores}}
    acc = [distilled_acc[i] for i in inside]
    oracle = max(acc)
    biggest = max(params[i] for i in inside)
    regret = lambda a: None if a is None else oracle - a  # noqa: E731
    largest = statistics.fmean(distilled_acc[i] for i in inside if params[i] == biggest)
    random = statistics.fmean(acc)
    picks = {name: top_pick([values[i] for i in inside], acc) for name, values in scores.items()}
    return {"budget_params": budget, "students": len(inside), "oracle": oracle,
            "largest": {"distilled_acc": largest, "regret": regret(largest)},
            "random": {"distilled_acc": random, "regret": regret(random)},
            "picks": {name: {"distilled_acc": a, "regret": regret(a)} for name, a in picks.items()}}


def print_report(results: dict[str, Any], picks: list[dict[str, Any]]) -> None:
    header = ["score", "n", "fail", "ρ in budget (mean)", "lead over params [95% CI]", "ρ distilled", "τ distilled", "ρ gain", "ρ alone", "partial ρ", "ρ in quartiles",
              *[f"regret p{b['percentile']}" for b in picks]]
    rows = []
    for name, r in results.items():
        fails = r["failures"].get("count", r["failures"].get("archs_with_a_failed_member", 0))
        lead = r["in_budget_margin_over_params"]
        rows.append([name, str(r["vs_distilled_acc"]["n"]), str(fails), fmt(r["in_budget_vs_distilled_acc"]["mean"]),
                     "—" if lead["margin"] is None else f"{lead['margin']:+.2f} [{lead['ci95'][0]:+.2f}, {lead['ci95'][1]:+.2f}]",
                     fmt(r["vs_distilled_acc"]["spearman"]),
                     fmt(r["vs_distilled_acc"]["kendall"]), fmt(r["vs_gain"]["spearman"]), fmt(r["vs_alone_acc"]["spearman"]),
                     fmt(r["partial_vs_distilled_acc_given_log_params"]["spearman"]),
                     fmt(r["within_params_quartiles_vs_distilled_acc"]["mean"]),
                     *[fmt((b["picks"][name] or {}).get("regret"), 2) for b in picks]])
    print_table(header, rows, out=sys.stdout)  # the stream of now, not of import time (print_table's default)
    print()
    print_table(["budget", "params ≤", "students", "oracle %", "largest %", "random %"],
                [[f"p{b['percentile']}", f"{b['budget_params']:,.0f}", str(b["students"]), fmt(b["oracle"], 2),
                  fmt((b["largest"] or {}).get("distilled_acc"), 2), fmt((b["random"] or {}).get("distilled_acc"), 2)] for b in picks], out=sys.stdout)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    wall = time.perf_counter()
    if args.batch_size < 1:
        raise DasError(f"--batch-size {args.batch_size} must be at least 1")
    truth = read_ground_truth(args.ground_truth)
    proxies = resolve_proxies(args.proxies, population=True)
    threads = set_threads(args.threads)
    gt = truth.settings
    for key in ("teacher", "space_args"):
        if key not in gt:
            raise DasError(f"--ground-truth {args.ground_truth}: its settings lack {key!r}; rerun distill_ground_truth.py to rewrite the summary")
    data = args.data or str(shared_data_dir() / "cifar10" / Path(gt.get("train_file") or "train_jpeg.npz").name)
    checkpoint = args.teacher_checkpoint or gt.get("teacher_checkpoint") or ""
    require_file(checkpoint, "--teacher-checkpoint", f"the weights of the summary's teacher {gt['teacher']!r}")
    space = make_space(truth.space, gt["space_args"])
    scored = scored_proxies(proxies)
    num_batches = batches_needed(scored)
    image_size = int(gt.get("image_size") or 32)
    batches, num_classes = load_probe_batches(data, args.batch_size, num_batches, args.seed, image_size)
    out = Path(args.out or f"benchmarks/results/{BENCHMARK}_{truth.population}.json")
    scores_path = out.with_suffix(".scores.csv")
    identity = {"benchmark": BENCHMARK, "population": truth.population, "space_args": space.space_args, "seed": args.seed,
                "batch_size": args.batch_size, "data": Path(data).name, "image_size": image_size, "num_classes": num_classes,
                "teacher": gt["teacher"], "teacher_checkpoint": Path(checkpoint).name, "teacher_init": DEFAULT_TEACHER_INIT}
    scores = ScoresFile(scores_path, identity, [*scored, *VARIANTS], resume=args.resume)
    try:
        todo = [s for s in truth.students if s.key not in scores]
        print(f"{len(truth.students)} trained {truth.population} students ({truth.untrained} untrained skipped), {len(todo)} to score with "
              f"{', '.join(proxies)} and {len(VARIANTS)} DisWOT variants on {num_batches}×{args.batch_size} images of {data}, "
              f"{threads} thread(s); scores -> {scores_path}", file=sys.stderr)
        if todo:
            references = teacher_references(gt["teacher"], checkpoint, batches[0], num_classes, args.seed)
            score_population(todo, space, num_classes, batches, scores, references, args.seed)
    finally:
        scores.close()

    rows = [scores.rows[s.key] for s in truth.students]
    columns = score_columns(rows, truth.students, proxies)
    results = {name: {k: v for k, v in c.items() if k != "values"} | correlations(c["values"], truth.students) for name, c in columns.items()}
    params, distilled = [float(s.params) for s in truth.students], [s.distilled_acc for s in truth.students]
    values = {name: c["values"] for name, c in columns.items()}
    budget_list = budgets(params)
    for name, c in columns.items():
        results[name]["in_budget_vs_distilled_acc"] = in_budget_correlation(c["values"], params, distilled, budget_list)
        results[name]["in_budget_margin_over_params"] = margin_over_params(c["values"], params, distilled, budget_list, args.bootstrap, args.seed)
    picks = [{"percentile": q, **budget_pick(params, distilled, values, b)} for q, b in zip(PERCENTILES, budget_list)]
    result = {
        "benchmark": BENCHMARK, "population": truth.population, "ground_truth": Path(args.ground_truth).name,
        "students_trained": len(truth.students), "students_untrained_skipped": truth.untrained,
        "teacher_test_acc": truth.teacher_test_acc, "budget_rule": BUDGET_RULE, "results": results, "budget_picks": picks,
        "settings": {**identity, "proxies": proxies, "num_batches": num_batches, "diswot_variants": VARIANTS, "threads": threads,
                     "scores_file": scores_path.name, "resume": args.resume,
                     "ground_truth_settings": {k: gt.get(k) for k in ("teacher", "teacher_checkpoint", "train_file", "train_images",
                                                                     "data_seed", "image_size", "epochs", "losses", "population")},
                     "date": now_iso(), "machine": machine_info(), "code": code_version()},
        "timing": {"seconds_scoring": sum(r.seconds for r in rows), "seconds_this_invocation": time.perf_counter() - wall},
    }
    write_json(out, result)
    print_report(results, picks)
    print(f"\n{len(rows)} students; higher is better for every score; regret = oracle − the score's pick, in points -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
