"""Does das compute the same proxies as a reference implementation? Agreement with NASLib.

A proxy can correlate with accuracy and still be a different proxy from the paper's. NASLib
(NAS-Bench-Suite-Zero, Krishnakumar et al., NeurIPS 2022 Datasets and Benchmarks) published its
zero-cost scores for ~724 NAS-Bench-201 architectures per dataset; this script scores the same
architectures with das and reports, per proxy, Spearman ρ (and Kendall τ) between das's score
and NASLib's. Because both sides rank the same architectures, ρ near 1 means das implements the
proxy as NASLib does, up to the random initialisation and probe batch (NASLib's seeds and images
are not ours, so data-dependent proxies cannot reach exactly 1). params and flops are
deterministic functions of the network and must agree to ≥ 0.99.

Keys of the NASLib file are op-index tuples, read with ``das.spaces.nb201.from_naslib_tuple``.
Proxies are matched by name (das and NASLib both use fisher, flops, grad_norm, grasp, jacov,
nwot, params, snip, synflow); NASLib's epe_nas, l2_norm and plain are matched too once das
registers proxies of those names. Proxies das has and NASLib lacks are reported against
NASLib's ``val_accuracy`` only. For context the table also gives each side's ρ with that
accuracy on the same architectures. Nothing here feeds back into a proxy.

With ``--accuracy-csv`` (by default the NB201 table the correlation benchmark uses) both sides
are also ranked against that table's accuracy on the architectures it holds. That is the
controlled comparison behind das's published-vs-measured table: NASLib's own scores and das's,
on the same architectures and the same ground truth, so a gap to a published ρ that both share
comes from the ground truth and the sample, not from das's implementation.

    python -m benchmarks.naslib_agreement --naslib ../shared/data/nb201/naslib_zc_nasbench201.json \\
        --data ../shared/data/cifar10/train_jpeg.npz --proxies all --out benchmarks/results/naslib_agreement.json
"""

from __future__ import annotations

import argparse
import os
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (ACCURACY_COLUMNS, code_version, fmt, machine_info, now_iso, print_table, read_accuracy_csv, set_threads,
                               write_json)
from das.cli import guarded
from das.errors import DasError
from das.paths import shared_data_dir
from das.proxies import PROXIES
from das.report.inputs import batches_needed, load_probe, require_file, resolve_proxies, teacher_reference
from das.report.ranking import rank_correlation
from das.report.scores_file import ScoresFile
from das.report.scoring import failure_summary, score_archs, supports_fused
from das.spaces import create_space
from das.spaces.nb201 import from_naslib_tuple

#: The proxies in NASLib's NB201 zero-cost file.
NASLIB_PROXIES: tuple[str, ...] = ("epe_nas", "fisher", "flops", "grad_norm", "grasp", "jacov", "l2_norm", "nwot", "params", "plain", "snip", "synflow")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    data = shared_data_dir()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--naslib", default=str(data / "nb201" / "naslib_zc_nasbench201.json"), help="NASLib's zero-cost NB201 file")
    p.add_argument("--dataset", default="cifar10", help="section of the NASLib file (das scores on --data with 10 classes: use cifar10)")
    p.add_argument("--data", default=str(data / "cifar10" / "train_jpeg.npz"), help=".npz the probe batches are drawn from")
    p.add_argument("--proxies", default="all", help="comma-separated das proxies or 'all'")
    p.add_argument("--seed", type=int, default=0, help="seeds the probe batches and every network's initialisation")
    p.add_argument("--accuracy-csv", default=None, help="also rank both sides against this NB201 table's accuracy "
                   f"(default: {data / 'nb201' / 'nb201_accuracy.csv'} when present)")
    p.add_argument("--accuracy-column", default="cifar10_test_acc", help="the accuracy column of --accuracy-csv")
    p.add_argument("--limit", type=int, default=0, help="score only the first N archs of the file (0: all)")
    p.add_argument("--out", default="benchmarks/results/naslib_agreement.json", help="result JSON")
    p.add_argument("--scores", default=None, help="per-architecture scores CSV (default: OUT with .scores.csv)")
    p.add_argument("--resume", action="store_true", help="continue the scores file of an interrupted run (or add proxies to it)")
    p.add_argument("--rescore", default="", metavar="A,B", help="with --resume: discard these proxies' scores and compute them again (e.g. after a fix)")
    p.add_argument("--teacher", default="resnet56", help="teacher spec for teacher-aware proxies (DisWOT)")
    p.add_argument("--teacher-checkpoint", default=str(data / "teachers" / "cifar10_resnet56.th"), help="the teacher's trained weights")
    p.add_argument("--batch-size", type=int, default=64, help="probe images per batch (NASLib: 64)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--C", type=int, default=16, help="NB201 width (NASLib: 16)")
    p.add_argument("--N", type=int, default=5, help="NB201 cells per stage (NASLib: 5)")
    p.add_argument("--num-classes", type=int, default=10, help="classifier outputs")
    p.add_argument("--no-fused", action="store_true", help="compute the proxies one by one")
    p.add_argument("--save-every", type=int, default=50, help="write partial results every this many architectures")
    return p.parse_args(list(argv))


def read_naslib(path: str | Path, dataset: str) -> list[dict[str, Any]]:
    """One dict per arch: ``key`` (the NASLib tuple), ``arch`` string, ``val_accuracy`` and NASLib's scores."""
    p = require_file(path, "--naslib", "NASLib's zero-cost file, e.g. ../shared/data/nb201/naslib_zc_nasbench201.json")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DasError(f"{p} is not JSON ({err}); give NASLib's zc_nasbench201.json") from None
    if not isinstance(data, dict) or dataset not in data:
        raise DasError(f"{p} has no section {dataset!r}; sections: {sorted(data) if isinstance(data, dict) else 'none'}")
    rows = []
    for key, entry in data[dataset].items():
        rows.append({
            "key": key,
            "arch": from_naslib_tuple(key),
            "val_accuracy": float(entry["val_accuracy"]),
            "naslib": {n: float(entry[n]["score"]) for n in NASLIB_PROXIES if isinstance(entry.get(n), dict) and "score" in entry[n]},
        })
    if len(rows) < 2:
        raise DasError(f"{p} section {dataset!r} has {len(rows)} archs; agreement needs at least two")
    return rows


def summarise(scored: Sequence[Any], by_key: dict[str, dict[str, Any]], proxies: Sequence[str],
              table: dict[str, float] | None = None) -> dict[str, Any]:
    acc = [by_key[r.key]["val_accuracy"] for r in scored]
    in_table = [r for r in scored if table is not None and r.arch in table]
    table_acc = [table[r.arch] for r in in_table] if table is not None else []
    out: dict[str, Any] = {}
    for name in proxies:
        ours = [r.values[name] for r in scored]
        entry: dict[str, Any] = {"failures": failure_summary(scored, name), "das_vs_val_accuracy": rank_correlation(ours, acc)}
        if name in NASLIB_PROXIES:
            theirs = [by_key[r.key]["naslib"].get(name, float("nan")) for r in scored]
            entry["das_vs_naslib"] = rank_correlation(ours, theirs)
            entry["naslib_vs_val_accuracy"] = rank_correlation(theirs, acc)
        if table is not None:
            entry["das_vs_table_accuracy"] = rank_correlation([r.values[name] for r in in_table], table_acc)
            if name in NASLIB_PROXIES:
                entry["naslib_vs_table_accuracy"] = rank_correlation(
                    [by_key[r.key]["naslib"].get(name, float("nan")) for r in in_table], table_acc)
        out[name] = entry
    return out


def report_table(results: dict[str, Any]) -> None:
    header = ["proxy", "n", "fail", "ρ das~NASLib", "τ das~NASLib", "ρ das~acc", "ρ NASLib~acc", "n table", "ρ das~table", "ρ NASLib~table"]
    rows = []
    for name, r in results.items():
        agree = r.get("das_vs_naslib", {})
        table = r.get("das_vs_table_accuracy", {})
        rows.append([
            name, str(r["das_vs_val_accuracy"]["n"]), str(r["failures"]["count"]),
            fmt(agree.get("spearman")), fmt(agree.get("kendall")), fmt(r["das_vs_val_accuracy"]["spearman"]),
            fmt(r.get("naslib_vs_val_accuracy", {}).get("spearman")),
            str(table.get("n", "")), fmt(table.get("spearman")), fmt(r.get("naslib_vs_table_accuracy", {}).get("spearman")),
        ])
    print_table(header, rows)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    for option in ("batch_size", "C", "N", "num_classes", "save_every"):
        if getattr(args, option) < 1:
            raise DasError(f"--{option.replace('_', '-')} {getattr(args, option)} must be at least 1")
    if args.limit < 0:
        raise DasError(f"--limit {args.limit} must be 0 (all) or a positive count")
    threads = set_threads(args.threads)
    proxies = resolve_proxies(args.proxies)
    needs_teacher = any(PROXIES.get(n).needs_teacher for n in proxies)
    require_file(args.data, "--data", "an .npz with x (uint8 N×H×W×C) and y, e.g. ../shared/data/cifar10/train_jpeg.npz")
    if needs_teacher:
        require_file(args.teacher_checkpoint, "--teacher-checkpoint", "a trained teacher's weights, e.g. ../shared/data/teachers/cifar10_resnet56.th")
    rows = read_naslib(args.naslib, args.dataset)
    if args.limit:
        rows = rows[: args.limit]
    by_key = {r["key"]: r for r in rows}
    default_table = shared_data_dir() / "nb201" / "nb201_accuracy.csv"
    table_path = args.accuracy_csv or (default_table if default_table.is_file() else None)
    if args.accuracy_column not in ACCURACY_COLUMNS:
        raise DasError(f"--accuracy-column {args.accuracy_column!r} is not one of {', '.join(ACCURACY_COLUMNS)}")
    table = {r["arch"]: r[args.accuracy_column] for r in read_accuracy_csv(table_path)} if table_path else None
    num_batches = batches_needed(proxies)
    batches = load_probe(args.data, args.batch_size, num_batches, args.seed)
    teacher = teacher_reference(args.teacher, args.teacher_checkpoint, batches[0], args.num_classes) if needs_teacher else None
    space = create_space("nb201", C=args.C, N=args.N)
    fused = not args.no_fused

    out = Path(args.out)
    scores_path = Path(args.scores) if args.scores else out.with_suffix(".scores.csv")
    identity = {
        "benchmark": "naslib_agreement", "dataset": args.dataset, "seed": args.seed, "batch_size": args.batch_size,
        "C": args.C, "N": args.N, "num_classes": args.num_classes, "data": Path(args.data).name,
        # the teacher is recorded even when unused, so proxies added later (--resume) match
        "teacher": args.teacher, "teacher_checkpoint": Path(args.teacher_checkpoint).name,
    }
    rescore = [n.strip() for n in args.rescore.split(",") if n.strip()]
    if rescore and (not args.resume or set(rescore) - set(proxies)):
        raise DasError(f"--rescore {args.rescore} needs --resume and proxies among --proxies {proxies}")
    scores = ScoresFile(scores_path, identity, proxies, resume=args.resume, rescore=rescore)
    started = now_iso()
    code = code_version()

    def result(complete: bool) -> dict[str, Any]:
        scored = [scores.rows[r["key"]] for r in rows if r["key"] in scores]
        seconds = sum(s.seconds for s in scored)
        return {
            "benchmark": "naslib_agreement",
            "complete": complete,
            "archs_scored": len(scored),
            "archs_per_second": len(scored) / seconds if seconds else None,
            "settings": {
                **identity, "proxies": proxies, "num_batches": num_batches, "num_archs": len(rows),
                "teacher": args.teacher if needs_teacher else None,
                "teacher_checkpoint": Path(args.teacher_checkpoint).name if needs_teacher else None, "threads": threads, "fused": fused and supports_fused(),
                "naslib_file": Path(args.naslib).name,
                "accuracy_table": None if table_path is None else {"file": Path(table_path).name, "column": args.accuracy_column},
                "date": now_iso(), "started": started, "code": code,
                "load_average": list(os.getloadavg()),  # other work on the machine slows archs_per_second
                "machine": machine_info(), "scores_file": scores_path.name,
            },
            "naslib_proxies_without_das_counterpart": [n for n in NASLIB_PROXIES if n not in proxies],
            "results": summarise(scored, by_key, proxies, table),
        }

    print(f"scoring {len(rows)} NASLib {args.dataset} archs with {', '.join(proxies)}; scores → {scores_path}", file=sys.stderr)
    try:
        score_archs([(r["key"], r["arch"]) for r in rows], lambda a: space.spec(arch=a).build(args.num_classes), batches,
                    scores, args.seed, teacher=teacher, fused=fused, every=args.save_every,
                    on_progress=lambda: write_json(out, result(False)), desc="naslib archs")
    except KeyboardInterrupt:
        write_json(out, result(False))
        raise
    finally:
        scores.close()
    final = result(True)
    write_json(out, final)
    print(f"\n{final['archs_scored']} archs; results → {out}")
    report_table(final["results"])
    missing = final["naslib_proxies_without_das_counterpart"]
    if missing:
        print(f"NASLib proxies not scored by das here: {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
