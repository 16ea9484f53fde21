"""DisWOT's protocol choices on NAS-Bench-201: which teacher, and the student's BatchNorm mode.

DisWOT compares an untrained student with a teacher. Two choices change its ranking: which
weights the teacher has (``random``: a seeded N(0, 1) re-initialisation of its architecture, as
the authors score; ``trained``: the trained checkpoint, eval mode) and how the student's
BatchNorm normalises at initialisation (``train``: with the probe batch's statistics, das's and
the zero-cost papers' protocol; ``eval``: running statistics, identity at initialisation). This
script scores the relation and semantic terms and their sum under all four combinations on a
prefix of the correlation benchmark's seeded sample, from one student forward per BN mode, and
reports against CIFAR-10 test accuracy: Spearman ρ, ρ with the parameter count, the partial ρ
given log params (what the score knows beyond size) and the mean ρ inside parameter quartiles.

NAS-Bench-201 records stand-alone accuracy, not accuracy after distillation, which is what
DisWOT claims to predict: these figures say how each variant ranks trainability, not which one
predicts distillation (that needs distilled accuracies).

    python -m benchmarks.diswot_variants --num-archs 1000 --out benchmarks/results/diswot_variants.json

Per-architecture values go to ``OUT.scores.csv`` as they come; ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from benchmarks.common import code_version, machine_info, now_iso, read_accuracy_csv, sample_rows, set_threads, write_json
from benchmarks.common import DISWOT_VARIANTS as VARIANTS
from benchmarks.common import diswot_teacher_references as teacher_references
from benchmarks.common import diswot_variant_scores as variant_scores
from das.cli import guarded
from das.errors import DasError
from das.paths import shared_data_dir
from das.report.inputs import load_probe
from das.report.ranking import partial_rank_correlation, rank_correlation, within_bins_correlation
from das.report.scores_file import ScoredArch, ScoresFile
from das.spaces import create_space
from das.stats import count_params


#: Every (teacher, BN mode, term) column, then the parameter count for reference.
COLUMNS = VARIANTS + ["params"]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    data = shared_data_dir()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--accuracy-csv", default=str(data / "nb201" / "nb201_accuracy.csv"), help="NB201 accuracy table")
    p.add_argument("--data", default=str(data / "cifar10" / "train_jpeg.npz"), help=".npz the probe batch is drawn from")
    p.add_argument("--num-archs", type=int, default=1000, help="first N of the correlation benchmark's seeded sample")
    p.add_argument("--seed", type=int, default=0, help="the sample's, probe batch's, students' and random teacher's seed")
    p.add_argument("--teacher", default="resnet56", help="teacher spec")
    p.add_argument("--teacher-checkpoint", default=str(data / "teachers" / "cifar10_resnet56.th"), help="the teacher's weights")
    p.add_argument("--C", type=int, default=16, help="NB201 width (benchmark: 16)")
    p.add_argument("--N", type=int, default=5, help="NB201 cells per stage (benchmark: 5)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--resume", action="store_true", help="continue the scores file of an interrupted run")
    p.add_argument("--out", default="benchmarks/results/diswot_variants.json", help="result JSON")
    return p.parse_args(list(argv))


def summarise(rows: list[ScoredArch], accuracy: dict[str, float]) -> dict[str, Any]:
    acc = [accuracy[r.key] for r in rows]
    log_params = [math.log(r.values["params"]) for r in rows]
    results: dict[str, Any] = {}
    for name in COLUMNS:
        values = [r.values[name] for r in rows]
        results[name] = {
            "vs_cifar10_test_acc": rank_correlation(values, acc),
            "vs_params": rank_correlation(values, log_params),
            "partial_given_log_params": partial_rank_correlation(values, acc, log_params),
            "within_params_quartiles": within_bins_correlation(values, acc, log_params, bins=4),
        }
    return results


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.num_archs < 2:
        raise DasError(f"--num-archs {args.num_archs} must be at least 2 to rank")
    threads = set_threads(args.threads)
    out = Path(args.out)
    rows = sample_rows(read_accuracy_csv(args.accuracy_csv), args.num_archs, args.seed)
    batch = load_probe(args.data, 64, 1, args.seed)[0]
    references = teacher_references(args.teacher, args.teacher_checkpoint, batch, 10, args.seed)
    space = create_space("nb201", C=args.C, N=args.N)
    identity = {"benchmark": "diswot_variants", "seed": args.seed, "C": args.C, "N": args.N, "data": Path(args.data).name,
                "teacher": args.teacher, "teacher_checkpoint": Path(args.teacher_checkpoint).name}
    scores = ScoresFile(out.with_suffix(".scores.csv"), identity, COLUMNS, resume=args.resume)
    accuracy = {r["key"]: r["cifar10_test_acc"] for r in rows}

    def write() -> dict[str, Any]:
        done = [scores.rows[r["key"]] for r in rows if r["key"] in scores]
        result = {"benchmark": "diswot_variants", "archs": len(done), "complete": len(done) == len(rows),
                  "columns": "TERM@teacher_{random,trained}/bn_{train,eval}; params for reference",
                  "results": summarise(done, accuracy) if len(done) >= 2 else {},
                  "settings": {**identity, "num_archs": len(rows), "threads": threads, "date": now_iso(),
                               "torch": torch.__version__, "machine": machine_info(), "code": code_version()}}
        write_json(out, result)
        return result

    try:
        for i, r in enumerate(tqdm([r for r in rows if r["key"] not in scores], desc="diswot variants", unit="arch")):
            started = time.perf_counter()
            torch.manual_seed(args.seed)  # every student starts from the weights the correlation benchmark gives it
            student = space.spec(arch=r["arch"]).build(10)
            values = {**variant_scores(student, batch, references, args.seed), "params": float(count_params(student))}
            scores.add(ScoredArch(r["key"], r["arch"], time.perf_counter() - started, values))
            if i % 50 == 49:
                write()
    finally:
        scores.close()
        result = write()
    print(f"{result['archs']} archs; Spearman ρ with CIFAR-10 accuracy | partial ρ given log params | mean ρ in params quartiles:")
    for name, res in result["results"].items():
        fmt = lambda v: "  n/a" if v is None else f"{v:+.3f}"  # noqa: E731
        print(f"  {name:40s} {fmt(res['vs_cifar10_test_acc']['spearman'])} | {fmt(res['partial_given_log_params']['spearman'])} "
              f"| {fmt(res['within_params_quartiles']['mean'])}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
