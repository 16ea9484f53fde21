"""Does the search find good students? das's NB201 searches judged by NAS-Bench-201's trained accuracies.

A proxy that ranks well (``nb201_correlation.py``) is a necessary condition; the claim users care
about is that a *search* picks a good network. So this script runs the real search
(:func:`das.search.prepare.prepare_search`, ``optimize_here``, ``write_results``: ``run_search``'s
one-process path) on ``nb201`` at the benchmark's width (C=16, N=5), CIFAR-10 probe images and
the public CIFAR-10 ResNet-56 as teacher, and looks the picked architecture (``best_arch.json``)
up in ``nb201_accuracy.csv`` (CIFAR-10 test accuracy, 200 epochs, mean over NB201's seeds):

- objectives ``ensemble``, ``diswot`` and ``params`` (the size baseline: the largest network),
  samplers ``tpe`` and ``random``, ``--trials`` (200) distinct architectures per search, seeds
  0–4 (``study.seed``: the sampler, the probe batches and every student's initial weights);
- per (objective, sampler): the pick's accuracy, mean ± std over the seeds, and its percentile in
  the table (the share of table architectures at most as accurate: 100 is the table's best),
  against the table's best (NAS-Bench-201's optimum, 94.37%) and its mean (the expected accuracy
  of a random architecture);
- the table holds 11,719 of the 15,625 cells: a pick it lacks is **counted and listed** (with the
  mean accuracy of its isomorphs in the table, when it has any, for the reader only) and the
  means are over the picks it has;
- budgeted searches (``--budget-params``, default 500,000: ``budget.max_params``) for
  ``--budget-objectives``: the pick against the best and the mean table architecture within that
  budget, params counted on das's own network for each table architecture;
- throughput of the budgeted searches: trials per minute as measured (over-budget candidates
  rejected before any proxy runs) and as it would be without early rejection. das has no switch
  to turn the rejection off, so after each budgeted search up to ``--rejection-samples`` of its
  over-budget candidates are both rejected (``TrialObjective.measure``) and built + scored with the
  search's own proxies, probe batches, teacher and reference, timed back to back; the rate
  without rejection is the same trials with each over-budget one costing that scoring instead
  (an estimate: a sampler that saw scores instead of constraints would walk another path).

Probe settings are those of the shipped configs (:data:`CONFIGS`): ``ensemble`` as
``configs/search/cifar10_ensemble.yaml`` (2 batches of 64, ZiCo needs two; a reference population
of 100 random architectures), ``diswot`` and ``params`` as ``configs/search/cifar10_resnet56.yaml``
(1 batch of 64; DisWOT against a random re-initialisation of the teacher, the authors' protocol).
``study.report`` is empty: only the objective is scored. The ensemble's reference depends on the
seed and the budget, not the sampler, so the second sampler's search copies the first one's
``ensemble_reference.json`` (the file it would build itself) instead of scoring 100 more networks.
The teacher's test accuracy, a log line of every search that enters no score, is measured on the
846 exact CIFAR-10 test images (a few seconds) rather than on ``test_jpeg.npz``'s 10,000 (~2 min at
load 7), which would have added over an hour to the run.

    python -m benchmarks.search_proof --threads 1 --no-progress --out benchmarks/results/search_proof.json

Each finished search is appended to ``OUT.runs.jsonl`` (first line: the settings; a file written
with other settings is refused) and the results JSON rewritten after it; rerunning the command
skips finished searches and resumes an interrupted one from its study (run dirs in ``OUT.work/``;
a resumed search's trials per minute spans the break, and its record says ``resumed``).
The accuracy table is read only for the report, so a rerun with another ``--accuracy-csv`` only
recomputes it.

Time, measured with this script on the project's 2-core CPU machine while two other benchmarks ran
(load average ~7), ``--threads 1 --trials 5 --seeds 0 --reference-size 5 --rejection-samples 3``
at C=16, N=5, from the CPU seconds each record keeps (``cost``; wall was ~1.5× CPU at that load):
per scored trial ensemble 2.4 s (1.8 s under the 0.5 M budget: smaller networks), diswot 0.42 s,
params 0.12 s; per reference architecture 2.6 s (1.6 s in budget); an over-budget candidate is
rejected in ~0.05 s and would cost ~4 s to score; ~3 s of set-up per search. The full run
(2,000 scored trials per objective, 2,000 budgeted, 5 + 5 references of 100) adds up to ~12,000 CPU
seconds: **≈ 3.3 h on one idle core, ≈ 5 h on that loaded machine**. Two threads there were ~5×
slower (13–31 s per ensemble trial at load 7.5: OpenMP threads waiting on each other), hence
``--threads 1``; try 2 on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# tqdm reads TQDM_DISABLE when it is imported: the reference population's bar obeys --no-progress only so.
if "--no-progress" in sys.argv[1:]:
    os.environ.setdefault("TQDM_DISABLE", "1")

import optuna  # noqa: E402
import yaml  # noqa: E402

from benchmarks.common import (code_version, fmt, machine_info, now_iso, parse_list, print_table, read_accuracy_csv, runs_file, set_threads,
                               spread, write_json)  # noqa: E402
from das.cli import guarded  # noqa: E402
from das.data import DasDataModule  # noqa: E402
from das.errors import DasError  # noqa: E402
from das.paths import shared_data_dir  # noqa: E402
from das.report.inputs import require_file  # noqa: E402
from das.search import BudgetConfig, SpaceConfig, StudyConfig, TeacherConfig  # noqa: E402
from das.search.ledger import INFEASIBLE, KIND  # noqa: E402
from das.search.reference import REFERENCE_FILE  # noqa: E402
from das.search.optimize import optimize_here  # noqa: E402
from das.search.prepare import Prepared, prepare_search  # noqa: E402
from das.search.run import write_results  # noqa: E402
from das.spaces import create_space  # noqa: E402
from das.spaces.nb201 import parse_arch  # noqa: E402
from das.spec import ArchSpec  # noqa: E402
from das.stats import count_flops, meta_params  # noqa: E402

# The checkout that holds these benchmarks: its shipped configs are the ones searched with.
ROOT = Path(__file__).resolve().parent.parent

#: The shipped config whose probe settings each objective searches with.
CONFIGS: dict[str, str] = {
    "ensemble": "configs/search/cifar10_ensemble.yaml",
    "diswot": "configs/search/cifar10_resnet56.yaml",
    "params": "configs/search/cifar10_resnet56.yaml",
}
SAMPLERS = ("tpe", "random")
#: Cells of the NB201 space (the table holds a subset).
SPACE_SIZE = 5 ** 6
ACC = "cifar10_test_acc"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    data = shared_data_dir()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--accuracy-csv", default=str(data / "nb201" / "nb201_accuracy.csv"), help="NB201 table: index, arch, *_test_acc")
    p.add_argument("--train-file", default=str(data / "cifar10" / "train_jpeg.npz"), help="npz the probe batches are drawn from (as the configs)")
    p.add_argument("--test-file", default=str(data / "cifar10" / "test_exact_846.npz"), help="npz the teacher's accuracy is logged on (no score reads it)")
    p.add_argument("--teacher", default=None, help="teacher spec (default: the configs' resnet56)")
    p.add_argument("--teacher-checkpoint", default=str(data / "teachers" / "cifar10_resnet56.th"), help="the teacher's trained weights")
    p.add_argument("--objectives", default="ensemble,diswot,params", help=f"comma-separated, from {', '.join(CONFIGS)}")
    p.add_argument("--samplers", default=",".join(SAMPLERS), help=f"comma-separated, from {', '.join(SAMPLERS)}")
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated study seeds")
    p.add_argument("--trials", type=int, default=200, help="distinct in-budget architectures each search scores (study.trials)")
    p.add_argument("--budget-params", type=int, default=500_000, help="budget.max_params of the budgeted searches (0: none)")
    p.add_argument("--budget-objectives", default="ensemble", help="objectives searched under the budget too (every --samplers and --seeds)")
    p.add_argument("--rejection-samples", type=int, default=5, help="over-budget candidates per budgeted search timed rejected and scored")
    p.add_argument("--C", type=int, default=16, help="NB201 width of the first stage (benchmark: 16)")
    p.add_argument("--N", type=int, default=5, help="NB201 cells per stage (benchmark: 5)")
    p.add_argument("--probe-batch-size", type=int, default=None, help="images per probe batch (default: each objective's config)")
    p.add_argument("--reference-size", type=int, default=None, help="ensemble reference architectures (default: its config's)")
    p.add_argument("--device", default="cpu", help="where students are scored: cpu, cuda[:N] or auto (picks may differ by float rounding)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: on a shared 2-core machine 2 were ~5x slower)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--out", default="benchmarks/results/search_proof.json", help="result JSON")
    return p.parse_args(list(argv))


# --------------------------------------------------------------------------- what is searched


@dataclass(frozen=True)
class Case:
    """One search: an objective, a sampler, a seed and an optional params budget."""

    objective: str
    sampler: str
    seed: int
    max_params: int | None = None

    @property
    def name(self) -> str:
        budget = f"-params{self.max_params}" if self.max_params else ""
        return f"{self.objective}-{self.sampler}-seed{self.seed}{budget}"

    @property
    def group(self) -> str:
        return f"{self.objective}/{self.sampler}" + (f"/params<={self.max_params}" if self.max_params else "")


def probe_settings(objective: str, args: argparse.Namespace) -> dict[str, Any]:
    """The objective's config's data normalisation, teacher and probe settings, with the command's overrides."""
    path = ROOT / CONFIGS[objective]
    cfg = yaml.safe_load(path.read_text())
    study = cfg["study"]
    return {
        "config": CONFIGS[objective],
        "mean": cfg["data"]["mean"], "std": cfg["data"]["std"],
        "teacher": args.teacher or cfg["teacher"]["spec"], "teacher_init": cfg["teacher"].get("init", "random"),
        "probe_batch_size": args.probe_batch_size or study["probe_batch_size"],
        "probe_batches": study["probe_batches"],
        "reference_size": (args.reference_size or study.get("reference_size", StudyConfig.reference_size)) if objective == "ensemble" else None,
    }


def plan(objectives: list[str], samplers: list[str], seeds: list[int], budget: int | None, budget_objectives: list[str]) -> list[Case]:
    """Seed-major, so a table cut short has every (objective, sampler) at its first seeds."""
    cases = []
    for seed in seeds:
        cases += [Case(o, s, seed) for o in objectives for s in samplers]
        if budget:
            cases += [Case(o, s, seed, budget) for o in budget_objectives for s in samplers]
    return cases


# --------------------------------------------------------------------------- one search


def trial_timing(study: optuna.Study) -> dict[str, Any]:
    """Trials per minute between the first trial's start and the last one's end, and mean seconds by kind."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None and t.user_attrs.get(KIND)]
    if not trials:
        return {"trials": 0}
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    by_kind: dict[str, list[float]] = {}
    for t in trials:
        by_kind.setdefault(t.user_attrs[KIND], []).append((t.datetime_complete - t.datetime_start).total_seconds())
    scored = len(by_kind.get("scored", []))
    return {"trials": len(trials), "span_s": span, "trials_per_min": 60 * len(trials) / span if span else None,
            "scored_per_min": 60 * scored / span if span else None,
            "mean_trial_s": {k: statistics.fmean(v) for k, v in by_kind.items()}, "count": {k: len(v) for k, v in by_kind.items()}}


def rejection_cost(p: Prepared, samples: int) -> dict[str, Any]:
    """Seconds to reject vs to build and score the first ``samples`` distinct over-budget candidates of the search.

    Scoring is what a search without early rejection would pay for each of them: a build, FLOPs
    and every objective proxy on the search's own probe batches, teacher and reference.
    """
    objective, seen, specs = p.objective, set(), []
    for t in sorted(p.optuna_study.get_trials(deepcopy=False), key=lambda t: t.number):
        if len(specs) == samples:
            break
        if t.user_attrs.get(KIND) == INFEASIBLE and t.user_attrs.get("key") not in seen:
            seen.add(t.user_attrs.get("key"))
            specs.append(ArchSpec.from_json(t.user_attrs["arch"]))
    reject, score = [], []
    for spec in specs:
        started = time.perf_counter()
        candidate, _ = objective.measure(spec)
        reject.append(time.perf_counter() - started)
        if candidate.feasible:
            raise DasError(f"{spec} was over budget in the search but is within it now; rerun in a fresh --out")
        started = time.perf_counter()
        model = objective.build(spec)
        objective.score(model, p.proxies, flops=count_flops(model, objective.input_shape))
        score.append(time.perf_counter() - started)
    return {"samples": len(specs), "reject_s": statistics.fmean(reject) if reject else None,
            "score_s": statistics.fmean(score) if score else None}


def run_case(case: Case, args: argparse.Namespace, data: DasDataModule, probe: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run (or resume) one search in ``work/<case>``; return its record for the runs file."""
    run_dir = work / case.name
    resumed = (run_dir / "study.journal").exists()
    if case.objective == "ensemble" and not (run_dir / REFERENCE_FILE).exists():
        twin = next((work / Case(case.objective, s, case.seed, case.max_params).name for s in SAMPLERS if s != case.sampler), None)
        if twin is not None and (twin / REFERENCE_FILE).exists():  # the same seed and budget draw the same reference
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(twin / REFERENCE_FILE, run_dir / REFERENCE_FILE)
    teacher = TeacherConfig(spec=probe["teacher"], checkpoint=args.teacher_checkpoint, init=probe["teacher_init"])
    study = StudyConfig(trials=args.trials, objective=case.objective, report=[], sampler=case.sampler, seed=case.seed,
                        probe_batch_size=probe["probe_batch_size"], probe_batches=probe["probe_batches"],
                        reference_size=probe["reference_size"] or StudyConfig.reference_size)
    log = lambda message: print(f"[{case.name}] {message}", flush=True)  # noqa: E731
    started, cpu = time.perf_counter(), time.process_time()
    p = prepare_search(run_dir, data, teacher, SpaceConfig("nb201", {"C": args.C, "N": args.N}), BudgetConfig(max_params=case.max_params),
                       study, device=args.device, log=log)
    prepared, cpu_prepared = time.perf_counter(), time.process_time()
    interrupted = optimize_here(p, progress=not args.no_progress) if p.remaining else False
    # CPU seconds as well as wall ones: on a shared machine they say what the work costs, whatever the load.
    cost = {"prepare_s": prepared - started, "prepare_cpu_s": cpu_prepared - cpu,
            "trials_s": time.perf_counter() - prepared, "trials_cpu_s": time.process_time() - cpu_prepared}
    summary = write_results(p, interrupted=interrupted, stopped=p.objective.stopped, started=started, log=log)
    if interrupted:
        raise KeyboardInterrupt
    best = ArchSpec.load(run_dir / "best_arch.json")  # the pick, as a user gets it
    record = {"kind": "search", "name": case.name, "objective": case.objective, "sampler": case.sampler, "seed": case.seed,
              "max_params": case.max_params, "arch": best.choice("arch"), "params": summary["best"]["params"],
              "score": summary["best"][case.objective], "counts": {k: summary[k] for k in ("trials", "scored", "duplicates", "infeasible")},
              "stopped_early": summary["stopped_early"], "seconds": time.perf_counter() - started, "cost": cost, "resumed": resumed,
              "timing": trial_timing(p.optuna_study), "teacher_test_acc": summary["teacher_test_acc"],
              "device": str(p.objective.device), "threads": args.threads, "date": now_iso()}
    if case.max_params:
        record["rejection"] = rejection_cost(p, args.rejection_samples)
    return record


# --------------------------------------------------------------------------- the table


class Table:
    """The accuracy lookup: CIFAR-10 test accuracy per arch string, params at the search's width, isomorph classes.

    Params come from das's own network built on the meta device, once per multiset of ops: every
    edge of a cell maps its stage's C channels to C, so where an op sits changes no count.
    """

    def __init__(self, path: str | Path, C: int, N: int) -> None:
        rows = read_accuracy_csv(path)
        self.path = Path(path)
        self.acc = {r["arch"]: r[ACC] for r in rows}
        space = create_space("nb201", C=C, N=N)
        by_ops: dict[tuple[str, ...], int] = {}
        self.params: dict[str, int] = {}
        self.isomorphs: dict[str, list[float]] = {}
        for arch, acc in self.acc.items():
            ops = tuple(sorted(parse_arch(arch)))
            if ops not in by_ops:
                by_ops[ops] = meta_params(lambda: space.spec(arch=arch).build(10))
            self.params[arch] = by_ops[ops]
            self.isomorphs.setdefault(space.canonical(space.spec(arch=arch)), []).append(acc)
        self.space = space

    def within(self, max_params: int | None) -> list[str]:
        return [a for a in self.acc if max_params is None or self.params[a] <= max_params]

    def percentile(self, acc: float, max_params: int | None = None) -> float:
        """Share (%) of the table's architectures (within ``max_params``) at most as accurate as ``acc``."""
        pool = [self.acc[a] for a in self.within(max_params)]
        return 100.0 * sum(a <= acc for a in pool) / len(pool)

    def reference(self, max_params: int | None = None) -> dict[str, Any]:
        """The best and the mean (a random architecture's expected accuracy) of the table, within ``max_params``."""
        pool = self.within(max_params)
        if not pool:
            raise DasError(f"--budget-params {max_params}: no architecture of {self.path} is within it; raise the budget")
        best = max(pool, key=lambda a: self.acc[a])
        return {"max_params": max_params, "rows": len(pool), "best": {"arch": best, "acc": self.acc[best], "params": self.params[best]},
                "mean_acc": statistics.fmean(self.acc[a] for a in pool)}

    def pick(self, record: dict[str, Any]) -> dict[str, Any]:
        """A search's pick with its accuracy and percentile, or None for both when the table lacks it."""
        arch = record["arch"]
        out = {"seed": record["seed"], "arch": arch, "params": record["params"], "score": record["score"]}
        if arch in self.acc:
            out.update(acc=self.acc[arch], percentile=self.percentile(self.acc[arch]))
            if record["max_params"]:
                out["percentile_within_budget"] = self.percentile(self.acc[arch], record["max_params"])
        else:
            isomorphs = self.isomorphs.get(self.space.canonical(self.space.spec(arch=arch)), [])
            out.update(acc=None, percentile=None, isomorphs_in_table=len(isomorphs),
                       isomorph_mean_acc=statistics.fmean(isomorphs) if isomorphs else None)
        return out


# --------------------------------------------------------------------------- the report


def summarise_group(records: list[dict[str, Any]], table: Table) -> dict[str, Any]:
    """One (objective, sampler, budget) over its seeds: picks, accuracy and percentile of those the table has, the rest listed."""
    picks = [table.pick(r) for r in sorted(records, key=lambda r: r["seed"])]
    found = [p for p in picks if p["acc"] is not None]
    first = records[0]
    ref = table.reference(first["max_params"])
    acc = spread([p["acc"] for p in found])
    out = {
        "objective": first["objective"], "sampler": first["sampler"], "max_params": first["max_params"],
        "n": len(picks), "seeds": [p["seed"] for p in picks],
        "acc": acc, "percentile": spread([p["percentile"] for p in found]),
        "unmatched": {"count": len(picks) - len(found), "picks": [p for p in picks if p["acc"] is None]},
        # against the table's best and mean: those within the budget, for a budgeted search
        "gap_to_best": None if acc["mean"] is None else ref["best"]["acc"] - acc["mean"],
        "gain_over_random": None if acc["mean"] is None else acc["mean"] - ref["mean_acc"],
        "picks": picks,
        "trials_per_min": spread([r["timing"]["trials_per_min"] for r in records if r["timing"].get("trials_per_min")]),
        "scored_per_min": spread([r["timing"]["scored_per_min"] for r in records if r["timing"].get("scored_per_min")]),
    }
    if first["max_params"]:
        out["percentile_within_budget"] = spread([p["percentile_within_budget"] for p in found])
        out["table_within_budget"] = ref
    return out


def throughput(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A budgeted group's trials per minute as measured, and estimated without early rejection (see the module docstring)."""
    with_, without, saved = [], [], []
    for r in records:
        t, cost = r["timing"], r["rejection"]
        infeasible = t.get("count", {}).get(INFEASIBLE, 0)
        if not t.get("span_s"):
            continue
        extra = infeasible * (cost["score_s"] - cost["reject_s"]) if cost["samples"] else 0.0
        with_.append(60 * t["trials"] / t["span_s"])
        without.append(60 * t["trials"] / (t["span_s"] + extra))
        saved.append(extra / (t["span_s"] + extra))
    return {"trials_per_min_with_rejection": spread(with_), "trials_per_min_without_rejection_estimated": spread(without),
            "share_of_time_saved": spread(saved),
            "infeasible_trials": [r["timing"].get("count", {}).get(INFEASIBLE, 0) for r in records],
            "reject_s": spread([r["rejection"]["reject_s"] for r in records if r["rejection"]["samples"]]),
            "score_over_budget_s": spread([r["rejection"]["score_s"] for r in records if r["rejection"]["samples"]]),
            "mean_trial_s_in_search": [r["timing"].get("mean_trial_s", {}) for r in records]}


def summarise(records: list[dict[str, Any]], cases: list[Case], table: Table | None) -> dict[str, Any]:
    wanted = {c.name for c in cases}
    done = [r for r in records if r.get("kind") == "search" and r["name"] in wanted]
    groups: dict[str, list[dict[str, Any]]] = {}
    for case in cases:
        groups.setdefault(case.group, [])
    for r in done:
        groups[Case(r["objective"], r["sampler"], r["seed"], r["max_params"]).group].append(r)
    out: dict[str, Any] = {"complete": len(done) == len(cases), "searches_done": len(done), "searches": len(cases)}
    if table is not None:
        out["table"] = {"file": table.path.name, "rows": len(table.acc), "space_size": SPACE_SIZE, **table.reference()}
        out["results"] = {g: summarise_group(rs, table) for g, rs in groups.items() if rs}
    out["throughput"] = {g: throughput(rs) for g, rs in groups.items() if rs and rs[0]["max_params"]}
    return out


def print_report(result: dict[str, Any]) -> None:
    table = result["table"]
    print(f"\n{table['file']}: {table['rows']} of {table['space_size']} cells; best {table['best']['acc']:.2f}%, "
          f"mean (a random architecture) {table['mean_acc']:.2f}%")
    rows = []
    for g, r in result["results"].items():
        ref = r.get("table_within_budget")
        rows.append([g, str(r["n"]), str(r["unmatched"]["count"]), f"{fmt(r['acc']['mean'], 2)} ± {fmt(r['acc']['std'], 2)}",
                     f"{fmt(r['percentile']['mean'], 1)}", fmt(r["gap_to_best"], 2), fmt(r["gain_over_random"], 2),
                     "—" if ref is None else f"{ref['best']['acc']:.2f} / {ref['mean_acc']:.2f}"])
    print_table(["search", "seeds", "not in table", "pick acc % (mean ± std)", "percentile", "below best", "over random",
                 "budget best / mean"], rows)
    if result["throughput"]:
        print()
        print_table(["budgeted search", "trials/min (rejecting)", "trials/min (scoring all, est.)", "time saved"],
                    [[g, fmt(t["trials_per_min_with_rejection"]["mean"], 1), fmt(t["trials_per_min_without_rejection_estimated"]["mean"], 1),
                      fmt(None if t["share_of_time_saved"]["mean"] is None else 100 * t["share_of_time_saved"]["mean"], 0) + "%"]
                     for g, t in result["throughput"].items()])


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    objectives = parse_list(args.objectives, "objectives")
    samplers = parse_list(args.samplers, "samplers")
    budget_objectives = parse_list(args.budget_objectives, "budget-objectives") if args.budget_params else []
    for name, allowed in (("objectives", CONFIGS), ("samplers", SAMPLERS), ("budget-objectives", CONFIGS)):
        values = {"objectives": objectives, "samplers": samplers, "budget-objectives": budget_objectives}[name]
        if set(values) - set(allowed):
            raise DasError(f"--{name}: unknown {sorted(set(values) - set(allowed))}; choose from {', '.join(allowed)}")
    seeds = parse_list(args.seeds, "seeds", int)
    for key in ("trials", "C", "N"):
        if getattr(args, key) < 1:
            raise DasError(f"--{key.replace('_', '-')} {getattr(args, key)} must be at least 1")
    if args.budget_params < 0 or args.rejection_samples < 0:
        raise DasError("--budget-params (0: none) and --rejection-samples must be >= 0")
    for option, path in (("--accuracy-csv", args.accuracy_csv), ("--train-file", args.train_file), ("--test-file", args.test_file),
                         ("--teacher-checkpoint", args.teacher_checkpoint)):
        require_file(path, option, "an existing file (see ../shared/data/README.md)")
    threads = set_threads(args.threads)
    table = Table(args.accuracy_csv, args.C, args.N)
    budget = args.budget_params or None
    if budget:
        table.reference(budget)  # a budget no table architecture meets fails before any search
    probes = {o: probe_settings(o, args) for o in dict.fromkeys([*objectives, *budget_objectives])}
    cases = plan(objectives, samplers, seeds, budget, budget_objectives)

    out = Path(args.out)
    work = out.with_name(out.name + ".work")
    identity = {"benchmark": "search_proof", "space": {"name": "nb201", "C": args.C, "N": args.N}, "trials": args.trials,
                "train_file": Path(args.train_file).name, "teacher_checkpoint": Path(args.teacher_checkpoint).name,
                "probe": probes, "rejection_samples": args.rejection_samples}
    runs = runs_file(out, identity)
    datas: dict[tuple, DasDataModule] = {}
    code = code_version()

    def write() -> dict[str, Any]:
        teacher = next((r for r in runs.records if r.get("kind") == "search"), None)
        result = {"benchmark": "search_proof", **summarise(runs.records, cases, table),
                  "teacher": None if teacher is None else {"spec": probes[teacher["objective"]]["teacher"], "test_acc": teacher["teacher_test_acc"],
                                                           "test_file": Path(args.test_file).name},
                  "settings": {**identity, "objectives": objectives, "samplers": samplers, "seeds": seeds, "budget_params": budget,
                               "budget_objectives": budget_objectives, "test_file": Path(args.test_file).name,
                               "accuracy_csv": Path(args.accuracy_csv).name, "threads": threads, "date": now_iso(),
                               "load_average": list(os.getloadavg()), "machine": machine_info(), "code": code}}
        write_json(out, result)
        return result

    todo = [c for c in cases if runs.find(kind="search", name=c.name) is None]
    print(f"{len(cases) - len(todo)} of {len(cases)} searches done; {len(todo)} to run ({args.trials} trials each, NB201 C={args.C}, "
          f"N={args.N}, {threads} threads); runs → {runs.path}", flush=True)
    try:
        for i, case in enumerate(todo, 1):
            probe = probes[case.objective]
            key = (tuple(probe["mean"]), tuple(probe["std"]))
            if key not in datas:  # one loaded copy of the images per normalisation
                datas[key] = DasDataModule(dataset="npz", train_file=args.train_file, test_file=args.test_file, mean=probe["mean"],
                                           std=probe["std"], augment=[])  # the probe batches take their own size
            print(f"[{i}/{len(todo)}] {case.name}", flush=True)
            runs.add(run_case(case, args, datas[key], probe, work))
            write()
    except KeyboardInterrupt:
        write()
        raise
    result = write()
    print_report(result)
    print(f"results → {out}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
