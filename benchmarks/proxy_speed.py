"""How fast is the proxy suite? Fused evaluation against one forward+backward and one-by-one.

Zero-cost search is only cheap if scoring a candidate costs about as much as a training step.
Many proxies read the same passes (snip, grad_norm, fisher, jacov, nwot, zico's first batch and
DisWOT all come from one labelled batch), so das computes a set of proxies with the fewest
passes. This script measures, on NAS-Bench-201 networks (C=16, N=5, batch 64, 32×32, 2 CPU
threads by default), per architecture:

- ``forward_backward``: one forward and backward pass with cross-entropy (the unit of cost);
- ``fused``: the whole suite in one ``score(...)`` call (shared passes);
- ``one_by_one``: ``score(..., fused=False)`` when das offers it (each proxy computes its own passes);
- ``separate_sum``: each proxy scored in its own ``score(model, batches, [p])`` call, summed,
  which is what a user calling the proxies one at a time pays;

and reports archs per second for each, the ratios fused / forward_backward (target ≤ ~3) and
separate_sum / fused (target ≥ 3), and each proxy's own time. Architectures are drawn
uniformly from the 15,625 cells (seeded); one extra architecture warms up first and is not
timed. Timings on a shared machine are noisy: the load average before and after is recorded.

    python -m benchmarks.proxy_speed --num-archs 20 --proxies all --out benchmarks/results/proxy_speed.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import code_version, fmt, machine_info, now_iso, print_table, set_threads, write_json
from das.cli import guarded
from das.errors import DasError
from das.paths import shared_data_dir
from das.proxies import PROXIES, score
from das.report.inputs import batches_needed, load_probe, resolve_proxies, teacher_reference
from das.report.scoring import score_options, supports_fused
from das.spaces import create_space
from das.spaces.nb201 import OPS, arch_string


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    data = shared_data_dir()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=str(data / "cifar10" / "train_jpeg.npz"), help=".npz the probe batches are drawn from")
    p.add_argument("--num-archs", type=int, default=20, help="architectures timed (plus one untimed warm-up)")
    p.add_argument("--seed", type=int, default=0, help="seeds the architectures, the batches and the initialisations")
    p.add_argument("--proxies", default="all", help="comma-separated proxies or 'all'")
    p.add_argument("--out", default="benchmarks/results/proxy_speed.json", help="result JSON")
    p.add_argument("--teacher", default="resnet56", help="teacher spec for teacher-aware proxies (DisWOT)")
    p.add_argument("--teacher-checkpoint", default=str(data / "teachers" / "cifar10_resnet56.th"), help="the teacher's trained weights")
    p.add_argument("--batch-size", type=int, default=64, help="probe images per batch")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--C", type=int, default=16, help="NB201 width (benchmark: 16)")
    p.add_argument("--N", type=int, default=5, help="NB201 cells per stage (benchmark: 5)")
    p.add_argument("--num-classes", type=int, default=10, help="classifier outputs")
    p.add_argument("--no-separate", action="store_true", help="skip timing each proxy on its own (halves the run time)")
    return p.parse_args(list(argv))


def random_archs(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [arch_string([OPS[i] for i in rng.integers(0, len(OPS), size=6)]) for _ in range(n)]


def forward_backward(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Seconds for one train-mode forward and backward pass with cross-entropy; grads are cleared after."""
    was = model.training
    model.train()
    x, y = batch
    t0 = time.perf_counter()
    F.cross_entropy(model(x), y).backward()
    seconds = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    model.train(was)
    return seconds


def clock(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: Sequence[str]) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    if args.num_archs < 1:
        raise DasError(f"--num-archs {args.num_archs} must be at least 1")
    threads = set_threads(args.threads)
    proxies = resolve_proxies(args.proxies)
    batches = load_probe(args.data, args.batch_size, batches_needed(proxies), args.seed)
    needs_teacher = any(PROXIES.get(n).needs_teacher for n in proxies)
    teacher = teacher_reference(args.teacher, args.teacher_checkpoint, batches[0], args.num_classes) if needs_teacher else None
    space = create_space("nb201", C=args.C, N=args.N)
    has_fused = supports_fused()
    archs = random_archs(args.num_archs + 1, args.seed)
    load_before = os.getloadavg()

    times: dict[str, list[float]] = {"forward_backward": [], "fused": [], "one_by_one": [], "separate_sum": []}
    per_proxy: dict[str, list[float]] = {p: [] for p in proxies}
    kw_fused = score_options(True, args.seed)
    kw_unfused = score_options(False, args.seed)
    kw_alone = {k: v for k, v in kw_fused.items() if k != "fused"}
    for i, arch in enumerate(tqdm(archs, desc="timing", unit="arch", dynamic_ncols=True)):
        torch.manual_seed(args.seed)
        model = space.spec(arch=arch).build(args.num_classes)
        fb = forward_backward(model, batches[0])
        fused = clock(lambda: score(model, batches, proxies, teacher=teacher, **kw_fused))
        unfused = clock(lambda: score(model, batches, proxies, teacher=teacher, **kw_unfused)) if has_fused else None
        alone = {}
        if not args.no_separate:
            for p in proxies:
                alone[p] = clock(lambda p=p: score(model, batches, [p], teacher=teacher, **kw_alone))
        if i == 0:
            continue  # warm-up: first calls pay for lazy initialisation
        times["forward_backward"].append(fb)
        times["fused"].append(fused)
        if unfused is not None:
            times["one_by_one"].append(unfused)
        if alone:
            times["separate_sum"].append(sum(alone.values()))
            for p, t in alone.items():
                per_proxy[p].append(t)

    totals = {k: sum(v) for k, v in times.items() if v}
    fb_total = totals["forward_backward"]
    summary: dict[str, Any] = {
        mode: {
            "archs_per_second": len(times[mode]) / total,
            "mean_seconds": total / len(times[mode]),
            "median_seconds": statistics.median(times[mode]),
            "x_forward_backward": total / fb_total,
        }
        for mode, total in totals.items()
    }
    ratios = {"fused_over_forward_backward": totals["fused"] / fb_total}
    if "separate_sum" in totals:
        ratios["separate_sum_over_fused"] = totals["separate_sum"] / totals["fused"]
    if "one_by_one" in totals:
        ratios["one_by_one_over_fused"] = totals["one_by_one"] / totals["fused"]
    result = {
        "benchmark": "proxy_speed",
        "archs_timed": args.num_archs,
        "proxies": proxies,
        "modes": summary,
        "ratios": ratios,
        "per_proxy_mean_seconds": {p: statistics.fmean(v) for p, v in per_proxy.items() if v},
        "settings": {
            "seed": args.seed, "batch_size": args.batch_size, "num_batches": len(batches), "image_size": list(batches[0][0].shape[-2:]),
            "C": args.C, "N": args.N, "num_classes": args.num_classes, "threads": threads, "data": Path(args.data).name,
            "teacher": args.teacher if needs_teacher else None, "score_has_fused": has_fused,
            "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
            "date": now_iso(), "machine": machine_info(), "code": code_version(),
        },
    }
    write_json(args.out, result)
    print(f"\n{args.num_archs} NB201 archs (C={args.C}, N={args.N}), batch {args.batch_size}, {threads} threads; results → {args.out}")
    print_table(["mode", "archs/s", "mean s", "× fwd+bwd"],
                [[m, fmt(s["archs_per_second"], 2), fmt(s["mean_seconds"], 3), fmt(s["x_forward_backward"], 2)] for m, s in summary.items()])
    print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    if result["per_proxy_mean_seconds"]:
        print_table(["proxy alone", "mean s", "× fwd+bwd"],
                    [[p, fmt(t, 3), fmt(t / (fb_total / len(times['forward_backward'])), 2)] for p, t in result["per_proxy_mean_seconds"].items()])
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
