"""How well do das's zero-cost proxies rank NAS-Bench-201 architectures? The proof, on real data.

A proxy is useful only if its ranking of untrained networks agrees with the ranking by trained
accuracy. This script samples N architectures from a NAS-Bench-201 accuracy table, builds each
with das's own NB201 space (the benchmark's network: C=16, N=5), scores it on seeded CIFAR-10
minibatches and reports, per proxy, Spearman ρ and Kendall τ against the test accuracy on
CIFAR-10, CIFAR-100 and ImageNet16-120.

Protocol (as the zero-cost proxy papers and NASLib do for the CIFAR-10 column):
- every network is built for 10 classes and scored on CIFAR-10 probe images, and that one
  score ranks the architecture against all three accuracy columns. For CIFAR-100 and
  ImageNet16-120 this measures how well a CIFAR-10 zero-cost ranking *transfers*: the published
  figures for those columns (Abdelfattah et al., ICLR 2021; NAS-Bench-Suite-Zero) were scored on
  each dataset's own images and class count, so only the CIFAR-10 column is like for like;
- minibatches of 64 images drawn with a seeded generator (two disjoint ones when a proxy such as
  zico needs two), normalised, not augmented; networks in train mode at initialisation;
- each student's weights come from ``torch.manual_seed(seed)`` right before it is built;
- DisWOT's teacher is the public CIFAR-10 ResNet-56 (``../shared/data/teachers``), read once on
  the first probe batch: by default a seeded random re-initialisation of it, as the DisWOT
  authors score (``--teacher-init trained`` for its trained weights);
- a proxy that raises or returns a non-finite value on an architecture is counted as a failure
  of that proxy (reported with examples) and left out of *its* correlation only; an ensemble
  ranks a failed member score last;
- ``ensemble`` (in ``all``) is scored through its members and ranked over the sampled
  population itself, as AZ-NAS reports its ensemble; with ``--ensemble-reference`` it is also
  ranked, as a search ranks candidates, against a fixed reference population taken from another
  run's scores file (architectures of this sample are removed from it first).

Run it (about 1–3 s per architecture for the full suite on 2 CPU cores)::

    python -m benchmarks.nb201_correlation \\
        --accuracy-csv ../shared/data/nb201/nb201_accuracy.csv \\
        --data ../shared/data/cifar10/train_jpeg.npz \\
        --num-archs 1000 --seed 0 --proxies all \\
        --ensemble synflow,jacov,nwot --out benchmarks/results/nb201_correlation.json

Scores are appended to ``OUT.scores.csv`` as they come and partial results written every
``--save-every`` architectures; rerun with ``--resume`` to continue an interrupted run (the
sample is a prefix of one seeded permutation, so a larger ``--num-archs`` extends an earlier
run). With everything already scored, ``--resume --ensemble ...`` only recomputes the report.
"""

from __future__ import annotations

import argparse
import os
import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (ACCURACY_COLUMNS, code_version, fmt, machine_info, now_iso, print_table, read_accuracy_csv, sample_rows,
                               scored_proxies, set_threads, write_json)
from das.cli import guarded
from das.errors import DasError
from das.paths import shared_data_dir
from das.proxies import DEFAULT_TEACHER_INIT, ENSEMBLE_MEMBERS, PROXIES, TEACHER_INITS, EnsembleReference
from das.report.inputs import load_probe, require_file, resolve_proxies, teacher_reference
from das.report.ranking import ensemble_name, log_rank_ensemble, partial_rank_correlation, rank_correlation, within_bins_correlation
from das.report.scores_file import ScoredArch, ScoresFile
from das.report.scoring import failure_summary, score_archs, supports_fused
from das.spaces import create_space

SHORT = {"cifar10_test_acc": "C10", "cifar100_test_acc": "C100", "imagenet16_120_test_acc": "IN16"}

PROTOCOL = (
    "Every architecture is built for 10 classes and scored once on CIFAR-10 probe batches; that score "
    "is ranked against all three accuracy columns (CIFAR-100 and ImageNet16-120 therefore measure "
    "transfer of a CIFAR-10 ranking; published figures for those columns used each dataset's own data). "
    "Failures (raised or non-finite) are counted per proxy and left out of that proxy's correlation; "
    "ensembles rank a failed member last."
)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    data = shared_data_dir()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--accuracy-csv", default=str(data / "nb201" / "nb201_accuracy.csv"), help="NB201 table: index, arch and the three *_test_acc columns")
    p.add_argument("--data", default=str(data / "cifar10" / "train_jpeg.npz"), help=".npz (x uint8 N×H×W×C, y) the probe batches are drawn from")
    p.add_argument("--num-archs", type=int, default=1000, help="architectures to sample (0: every row of the CSV)")
    p.add_argument("--seed", type=int, default=0, help="seeds the sample, the probe batches and every student's initialisation")
    p.add_argument("--proxies", default="all", help=f"comma-separated proxies or 'all' (now: {','.join(PROXIES.names())})")
    p.add_argument("--out", default="benchmarks/results/nb201_correlation.json", help="result JSON")
    p.add_argument("--scores", default=None, help="per-architecture scores CSV (default: OUT with .scores.csv)")
    p.add_argument("--resume", action="store_true", help="continue the scores file of an interrupted run (or add proxies to it)")
    p.add_argument("--rescore", default="", metavar="A,B", help="with --resume: discard these proxies' scores and compute them again (e.g. after a fix)")
    p.add_argument("--ensemble", action="append", default=[], metavar="A,B,C", help="report the AZ-NAS log-rank ensemble of these scored proxies (repeatable)")
    p.add_argument("--ensemble-reference", default=None, metavar="SCORES_CSV",
                   help="also report 'ensemble' ranked against this reference population: another run's scores file "
                        "(e.g. benchmarks/results/ensemble_selection.scores.csv), as a search ranks its candidates")
    p.add_argument("--teacher", default="resnet56", help="teacher spec for teacher-aware proxies (DisWOT)")
    p.add_argument("--teacher-checkpoint", default=str(data / "teachers" / "cifar10_resnet56.th"), help="the teacher's trained weights")
    p.add_argument("--teacher-init", default=DEFAULT_TEACHER_INIT, choices=TEACHER_INITS,
                   help="DisWOT compares with the trained teacher or a seeded random re-initialisation of it (the authors' protocol)")
    p.add_argument("--batch-size", type=int, default=64, help="probe images per batch")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--C", type=int, default=16, help="NB201 width of the first stage (benchmark: 16)")
    p.add_argument("--N", type=int, default=5, help="NB201 cells per stage (benchmark: 5)")
    p.add_argument("--num-classes", type=int, default=10, help="classifier outputs (CIFAR-10 protocol: 10)")
    p.add_argument("--no-fused", action="store_true", help="compute the proxies one by one instead of sharing passes")
    p.add_argument("--report-only", action="store_true", help="only recompute the report (e.g. new --ensemble) from the scores file; safe while a run is writing it")
    p.add_argument("--save-every", type=int, default=50, help="write partial results every this many architectures")
    return p.parse_args(list(argv))


def check_inputs(args: argparse.Namespace, needs_teacher: bool) -> None:
    """Every input file exists, checked before any work so a typo costs no time."""
    require_file(args.accuracy_csv, "--accuracy-csv", f"a CSV with columns index, arch, {', '.join(ACCURACY_COLUMNS)} (e.g. ../shared/data/nb201/nb201_accuracy.csv)")
    require_file(args.data, "--data", "an .npz with x (uint8 N×H×W×C) and y, e.g. ../shared/data/cifar10/train_jpeg.npz")
    if needs_teacher:
        require_file(args.teacher_checkpoint, "--teacher-checkpoint", "a trained teacher's weights, e.g. ../shared/data/teachers/cifar10_resnet56.th")


def correlations(rows: Sequence[ScoredArch], truth: dict[str, dict[str, float]], values: Sequence[float]) -> dict[str, Any]:
    """ρ/τ against every accuracy column and, when params were scored, what the score knows beyond size.

    ``beyond_size`` (CIFAR-10): the partial Spearman ρ given log params, and the mean ρ inside
    params quartiles; size decides most of accuracy, so a proxy is judged there too.
    """
    out: dict[str, Any] = {c: rank_correlation(values, [truth[r.key][c] for r in rows]) for c in ACCURACY_COLUMNS}
    sizes = [r.values.get("params", math.nan) for r in rows]
    if all(math.isfinite(v) and v > 0 for v in sizes):
        acc, log_params = [truth[r.key][ACCURACY_COLUMNS[0]] for r in rows], [math.log(v) for v in sizes]
        out["beyond_size"] = {
            "partial_given_log_params": partial_rank_correlation(values, acc, log_params)["spearman"],
            "mean_within_params_quartiles": within_bins_correlation(values, acc, log_params, bins=4)["mean"],
        }
    return out


def summarise(rows: Sequence[ScoredArch], truth: dict[str, dict[str, float]], proxies: Sequence[str],
              ensembles: Sequence[Sequence[str]], reference: EnsembleReference | None = None) -> dict[str, Any]:
    """Per proxy and per ensemble: Spearman/Kendall against each accuracy column, and failures.

    ``ensemble`` (when listed) is ranked over the scored population itself (AZ-NAS's protocol);
    with a ``reference`` it is also reported as a search computes it, against that population.
    """
    out: dict[str, Any] = {}
    population = [r.values for r in rows]
    for name in proxies:
        if name == "ensemble":
            continue
        out[name] = {"failures": failure_summary(rows, name), **correlations(rows, truth, [r.values[name] for r in rows])}
    rule = "sum_k log(rank_k / m), average ranks for ties, failed member scores ranked last"
    if "ensemble" in proxies:
        failed = sum(any(m in r.errors for m in ENSEMBLE_MEMBERS) for r in rows)
        out["ensemble"] = {
            "members": list(ENSEMBLE_MEMBERS), "rule": rule, "population": f"the {len(rows)} scored architectures",
            "failures": {"archs_with_a_failed_member": failed},
            **correlations(rows, truth, log_rank_ensemble(population, ENSEMBLE_MEMBERS)),
        }
        if reference is not None:
            values = [reference.value(r.values) if not any(m in r.errors for m in ENSEMBLE_MEMBERS) else math.nan for r in rows]
            out["ensemble_vs_reference"] = {
                "members": list(ENSEMBLE_MEMBERS), "rule": "das.proxies.ensemble: ranks interpolated among a fixed reference population",
                "population": f"reference of {reference.size} architectures from {reference.settings.get('file')}",
                "failures": {"archs_with_a_failed_member": failed},
                **correlations(rows, truth, values),
            }
    for members in ensembles:
        values = log_rank_ensemble(population, members)
        failed = sum(any(m in r.errors for m in members) for r in rows)
        out[ensemble_name(members)] = {
            "members": list(members),
            "rule": rule,
            "failures": {"archs_with_a_failed_member": failed},
            **correlations(rows, truth, values),
        }
    return out


def read_reference(path: str | Path, exclude: set[str]) -> EnsembleReference:
    """The ensemble members' scores of another run's scores file, minus architectures in ``exclude``."""
    p = require_file(path, "--ensemble-reference", "a scores CSV written by this benchmark (e.g. benchmarks/results/ensemble_selection.scores.csv)")
    with p.open(newline="") as f:
        reader = csv.DictReader(line for line in f if not line.startswith("#"))
        missing = [m for m in ENSEMBLE_MEMBERS if m not in (reader.fieldnames or [])]
        if missing:
            raise DasError(f"--ensemble-reference {p} lacks the ensemble members {missing}; score them in that run")
        population = []
        for r in reader:
            if r["key"] in exclude:
                continue
            try:
                population.append({m: float(r[m]) for m in ENSEMBLE_MEMBERS})
            except (TypeError, ValueError):
                continue  # a member failed on that architecture: not part of the reference
    return EnsembleReference.from_population(population, settings={"file": p.name, "excluded_overlap": True})


def report_table(results: dict[str, Any]) -> None:
    header = ["proxy", "n", "fail"] + [f"{k} {SHORT[c]}" for c in ACCURACY_COLUMNS for k in ("ρ", "τ")]
    table = []
    for name, r in results.items():
        fails = r["failures"].get("count", r["failures"].get("archs_with_a_failed_member", 0))
        n = r[ACCURACY_COLUMNS[0]]["n"]
        table.append([name, str(n), str(fails)] + [fmt(r[c][k]) for c in ACCURACY_COLUMNS for k in ("spearman", "kendall")])
    print_table(header, table)


def parse_ensembles(specs: Sequence[str], proxies: Sequence[str]) -> list[list[str]]:
    ensembles = [[m.strip() for m in e.split(",") if m.strip()] for e in specs]
    for members in ensembles:
        unknown = [m for m in members if m not in proxies]
        if not members or unknown:
            raise DasError(f"--ensemble {','.join(members)!r}: {unknown or 'no members'} not among the scored proxies {list(proxies)}; add them to --proxies")
        if len(set(members)) != len(members):
            raise DasError(f"--ensemble {','.join(members)} repeats a member; list each once")
    return ensembles


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    for option in ("batch_size", "C", "N", "num_classes", "save_every"):
        if getattr(args, option) < 1:
            raise DasError(f"--{option.replace('_', '-')} {getattr(args, option)} must be at least 1")
    if args.report_only and (args.resume or args.rescore):
        raise DasError("--report-only reads the scores file as it is; drop --resume/--rescore (or --report-only to score)")
    threads = set_threads(args.threads)
    out = Path(args.out)
    scores_path = Path(args.scores) if args.scores else out.with_suffix(".scores.csv")
    identity = {
        "benchmark": "nb201_correlation", "seed": args.seed, "batch_size": args.batch_size,
        "C": args.C, "N": args.N, "num_classes": args.num_classes, "data": Path(args.data).name,
        # the teacher is recorded even when unused, so proxies added later (--resume) match
        "teacher": args.teacher, "teacher_checkpoint": Path(args.teacher_checkpoint).name, "teacher_init": args.teacher_init,
    }

    if args.report_only:
        require_file(args.accuracy_csv, "--accuracy-csv", f"the CSV the scores were sampled from (columns index, arch, {', '.join(ACCURACY_COLUMNS)})")
        rows = sample_rows(read_accuracy_csv(args.accuracy_csv), args.num_archs, args.seed)
        wanted = [] if args.proxies.strip() == "all" else [n.strip() for n in args.proxies.split(",") if n.strip()]
        scores = ScoresFile(scores_path, identity, scored_proxies(wanted), resume=True, read_only=True)
        proxies = wanted or scores.complete_proxies(r["key"] for r in rows)
        if not wanted and set(ENSEMBLE_MEMBERS) <= set(proxies):
            proxies = [*proxies, "ensemble"]
        partial = [p for p in scores.file_proxies if p not in proxies]
        if partial and not wanted:
            print(f"not reported (scored for only some archs): {', '.join(partial)}", file=sys.stderr)
        scores.wanted = scored_proxies(proxies)
    else:
        proxies = resolve_proxies(args.proxies, population=True)
        parse_ensembles(args.ensemble, scored_proxies(proxies))  # a typo fails before any work
        check_inputs(args, any(PROXIES.get(n).needs_teacher for n in proxies))
        rows = sample_rows(read_accuracy_csv(args.accuracy_csv), args.num_archs, args.seed)
        rescore = [n.strip() for n in args.rescore.split(",") if n.strip()]
        if rescore and (not args.resume or set(rescore) - set(proxies)):
            raise DasError(f"--rescore {args.rescore} needs --resume and proxies among --proxies {proxies}")
        scores = ScoresFile(scores_path, identity, scored_proxies(proxies), resume=args.resume, rescore=rescore)
    ensembles = parse_ensembles(args.ensemble, scored_proxies(proxies))
    reference = None
    if args.ensemble_reference:
        if "ensemble" not in proxies:
            raise DasError("--ensemble-reference reports 'ensemble'; add ensemble to --proxies (or use --proxies all)")
        reference = read_reference(args.ensemble_reference, exclude={r["key"] for r in rows})
    needs_teacher = any(n in PROXIES and PROXIES.get(n).needs_teacher for n in proxies)
    truth = {r["key"]: {c: r[c] for c in ACCURACY_COLUMNS} for r in rows}
    num_batches = max([PROXIES.get(n).min_batches for n in scored_proxies(proxies)] + [1])
    fused = not args.no_fused
    started = now_iso()
    code = code_version()

    def result() -> dict[str, Any]:
        scored = [scores.rows[r["key"]] for r in rows if r["key"] in scores]
        seconds = sum(s.seconds for s in scored)
        return {
            "benchmark": "nb201_correlation",
            "complete": len(scored) == len(rows),
            "archs_scored": len(scored),
            "archs_per_second": len(scored) / seconds if seconds else None,
            "seconds_scoring": seconds,
            "settings": {
                **identity, "proxies": list(proxies), "num_batches": num_batches, "num_archs": len(rows),
                "teacher": args.teacher if needs_teacher else None,
                "teacher_checkpoint": Path(args.teacher_checkpoint).name if needs_teacher else None,
                "threads": threads, "fused": fused and supports_fused(), "accuracy_csv": Path(args.accuracy_csv).name,
                "date": now_iso(), "started": started, "report_only": args.report_only, "code": code,
                "load_average": list(os.getloadavg()),  # other work on the machine slows archs_per_second
                "torch": machine_info()["torch"], "machine": machine_info(), "scores_file": scores_path.name,
            },
            "protocol": PROTOCOL,
            "results": summarise(scored, truth, proxies, ensembles, reference),
        }

    if not args.report_only:
        try:
            batches = load_probe(args.data, args.batch_size, num_batches, args.seed)
            teacher = (teacher_reference(args.teacher, args.teacher_checkpoint, batches[0], args.num_classes, args.teacher_init, args.seed)
                       if needs_teacher else None)
            space = create_space("nb201", C=args.C, N=args.N)
            print(f"scoring {len(rows)} NB201 archs (C={args.C}, N={args.N}) with {', '.join(proxies)} on {num_batches}×{args.batch_size} "
                  f"images of {args.data}, {threads} threads; scores → {scores_path}", file=sys.stderr)
            score_archs([(r["key"], r["arch"]) for r in rows], lambda a: space.spec(arch=a).build(args.num_classes), batches,
                        scores, args.seed, teacher=teacher, fused=fused, every=args.save_every,
                        on_progress=lambda: write_json(out, result()))
        except KeyboardInterrupt:
            write_json(out, result())  # what was scored so far, marked incomplete
            raise
        finally:
            scores.close()
    final = result()
    write_json(out, final)
    print(f"\n{final['archs_scored']} of {len(rows)} archs, {fmt(final['archs_per_second'], 2)} archs/s ({threads} threads); results → {out}")
    report_table(final["results"])
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
