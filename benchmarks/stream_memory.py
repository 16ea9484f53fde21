"""Streamed data: does memory stay flat as the dataset grows, and does the stream keep a model fed?

Issue "Real datasets and accelerators", item 1. For each ``--sizes`` count N, a folder of N
generated JPEGs (``--side`` px, ``--classes`` classes; random pixels at quality 90, which decode
like small photos) is written to a temporary folder, and a child process (one per size, so no
size inherits another's memory) reads it as ``dataset=folder`` through DasDataModule's training
loader (``--workers`` DataLoader workers decoding and augmenting, crop + flip):

- **peak RSS** of one epoch read through the loader, no model: the child's own high-water mark
  (``getrusage``), its largest worker's, and their total (child + workers × largest worker), read
  before anything else is held in memory; the child's mark right after its imports (torch and
  Lightning alone are ~0.8 GB, so the ratio below is mostly theirs: the growth in MB between
  sizes and the index's bytes say what the data adds). Goal: peak RSS at the largest size ≤ 1.2×
  that at the smallest.
- **streaming rate**: a model (``--model``, default ResNet-20; one SGD step per batch on
  ``--threads`` threads) consuming the loader's batches for a whole epoch, against the same model
  consuming batches already in memory (a streamed epoch's batches collected first), images/s.
  The two passes alternate ``--repeats`` times. Goal: streamed ≥ 90% of in memory.

The defaults are a smoke run of seconds (500 and 2,000 images); the issue's figures are

    python -m benchmarks.stream_memory --sizes 2000,50000 --out benchmarks/results/stream_memory.json

and a quick look:

    python -m benchmarks.stream_memory --sizes 500,2000 --out benchmarks/results/stream_memory_small.json

``--work DIR`` keeps the generated folders there (reused when a rerun asks for the same size,
side and classes) instead of a temporary folder removed at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import code_version, load_average, machine_info, now_iso, parse_list, write_json
from das.cli import guarded
from das.errors import DasError

#: The issue's goals: peak RSS at the largest size over that at the smallest; streamed over in-memory images/s.
RSS_GOAL = 1.2
RATE_GOAL = 0.9
#: Test images per class: the folder layout needs a test split; the benchmark never reads it.
TEST_PER_CLASS = 2


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", default="500,2000", help="comma list of training-image counts, one child process each")
    p.add_argument("--side", type=int, default=32, help="side of the generated square JPEGs and of the images the model sees")
    p.add_argument("--classes", type=int, default=10, help="class folders")
    p.add_argument("--batch", type=int, default=128, help="images per batch")
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers decoding and augmenting")
    p.add_argument("--model", default="resnet20", help="the network consuming the batches (anything das.models.build_model takes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the model (the workers are separate processes)")
    p.add_argument("--repeats", type=int, default=1, help="alternated in-memory / streamed passes per size")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated pixels")
    p.add_argument("--work", default=None, help="keep the generated folders here (default: a temporary folder, removed)")
    p.add_argument("--out", default="benchmarks/results/stream_memory.json", help="summary JSON")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: measure one folder, print JSON
    return p.parse_args(list(argv))


def check_args(args: argparse.Namespace) -> list[int]:
    sizes = parse_list(args.sizes, "sizes", int)
    for key, least in (("side", 8), ("classes", 2), ("batch", 1), ("workers", 0), ("threads", 1), ("repeats", 1)):
        if getattr(args, key) < least:
            raise DasError(f"--{key} {getattr(args, key)} must be at least {least}")
    if min(sizes) < max(args.batch, args.classes):
        raise DasError(f"--sizes {args.sizes}: every size must be at least --batch {args.batch} and --classes {args.classes}")
    return sizes


# --------------------------------------------------------------------------- the folders


def generate_folder(root: Path, images: int, side: int, classes: int, seed: int) -> Path:
    """``root/train/<class>/<i>.jpg`` (``images`` in all, classes in turn) and a small ``root/test``; kept when complete."""
    from PIL import Image

    done = root / "complete.json"
    wanted = {"images": images, "side": side, "classes": classes, "seed": seed}
    if done.is_file() and json.loads(done.read_text()) == wanted:
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    names = [f"c{c:03d}" for c in range(classes)]
    for split, count in (("train", images), ("test", TEST_PER_CLASS * classes)):
        for name in names:
            (root / split / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / names[i % classes] / f"{i:06d}.jpg", quality=90)
    done.write_text(json.dumps(wanted))
    return root


# --------------------------------------------------------------------------- one size, in a child process


def peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kilobytes on Linux


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """In the child: an epoch read for peak RSS, then the in-memory and streamed model passes."""
    import torch

    from das.data import DasDataModule
    from das.models import build_model

    torch.set_num_threads(args.threads)
    baseline = peak_rss_mb(resource.RUSAGE_SELF)  # torch, Lightning and das imported: ~0.8 GB before any data
    dm = DasDataModule(dataset="folder", root=args.child, image_size=args.side, batch_size=args.batch, num_workers=args.workers,
                       augment=["crop", "flip"], val_fraction=0.0, seed=args.seed)
    files = dm.splits.train
    index_bytes = files.paths.nbytes + files.targets.nbytes
    loader = dm.train_dataloader()
    started, seen = time.perf_counter(), 0
    for x, _ in loader:
        seen += len(x)
    read_seconds = time.perf_counter() - started
    del loader, x
    gc.collect()  # shuts the persistent workers down, so their high-water mark is counted below
    rss = {"after_imports_mb": baseline, "main_mb": peak_rss_mb(resource.RUSAGE_SELF), "largest_worker_mb": peak_rss_mb(resource.RUSAGE_CHILDREN)}
    rss["epoch_mb"] = rss["main_mb"] - baseline  # what reading the data added to the child
    if not args.workers:
        rss["largest_worker_mb"] = 0.0  # no workers: whatever else this process started is not the loader's
    rss["total_mb"] = rss["main_mb"] + args.workers * rss["largest_worker_mb"]

    loader = dm.train_dataloader()
    held = [(x.clone(), y.clone()) for x, y in loader]  # a streamed epoch's batches, now in memory
    torch.manual_seed(args.seed)
    model = build_model(args.model, dm.num_classes)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step(*held[0])  # warm-up: first-call allocations are neither pass's cost
    passes: dict[str, list[float]] = {"in_memory": [], "streamed": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        for x, y in held:
            step(x, y)
        passes["in_memory"].append(sum(len(y) for _, y in held) / (time.perf_counter() - started))
        started, images = time.perf_counter(), 0
        for x, y in loader:
            step(x, y)
            images += len(y)
        passes["streamed"].append(images / (time.perf_counter() - started))
    rates = {k: statistics.median(v) for k, v in passes.items()}
    return {"images": len(files), "epoch_images": seen, "index_bytes": int(index_bytes), "read_seconds": read_seconds,
            "read_images_per_s": seen / read_seconds, "peak_rss": rss, "in_memory_images_per_s": rates["in_memory"],
            "streamed_images_per_s": rates["streamed"], "rate_ratio": rates["streamed"] / rates["in_memory"], "passes": passes}


def run_child(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    flags = ["--side", str(args.side), "--batch", str(args.batch), "--workers", str(args.workers), "--model", args.model,
             "--threads", str(args.threads), "--repeats", str(args.repeats), "--seed", str(args.seed), "--child", str(folder)]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.stream_memory", *flags], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DasError(f"measuring {folder} failed (exit {proc.returncode}): {' '.join(proc.stderr.strip().splitlines()[-1:])}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the run


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.child:  # the child's one line of JSON, read by run_child
        print(json.dumps(measure(args)))
        return 0
    sizes = check_args(args)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="das-stream-memory-"))
    rows = []
    try:
        for n in sizes:
            started = time.perf_counter()
            folder = generate_folder(work / f"jpeg_{n}_{args.side}px_{args.classes}c", n, args.side, args.classes, args.seed)
            generated = time.perf_counter() - started
            row = {"size": n, "generate_seconds": generated, **run_child(folder, args), "load_average": load_average()}
            rows.append(row)
            r = row["peak_rss"]
            workers = f" (+ {args.workers} worker(s) × {r['largest_worker_mb']:.0f} MB)" if args.workers else " (no workers)"
            print(f"{n} images: peak RSS {r['main_mb']:.0f} MB{workers}, "
                  f"index {row['index_bytes'] / 1e6:.2f} MB; read {row['read_images_per_s']:.0f} img/s; model "
                  f"{row['in_memory_images_per_s']:.0f} img/s in memory, {row['streamed_images_per_s']:.0f} streamed "
                  f"(ratio {row['rate_ratio']:.3f})", flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    small, large = rows[0], rows[-1]
    rss_ratio = {k: large["peak_rss"][k] / small["peak_rss"][k] for k in ("main_mb", "total_mb")}
    growth_mb = large["peak_rss"]["main_mb"] - small["peak_rss"]["main_mb"]
    worst_rate = min(r["rate_ratio"] for r in rows)
    result = {
        "benchmark": "stream_memory", "rows": rows,
        "rss_ratio_largest_to_smallest": rss_ratio, "rss_growth_mb": growth_mb, "rss_goal": RSS_GOAL, "rss_goal_met": max(rss_ratio.values()) <= RSS_GOAL,
        "worst_rate_ratio": worst_rate, "rate_goal": RATE_GOAL, "rate_goal_met": worst_rate >= RATE_GOAL,
        "settings": {**{k: v for k, v in vars(args).items() if k != "child"}, "date": now_iso(), "machine": machine_info(),
                     "code": code_version()},
    }
    write_json(Path(args.out), result)
    print(f"peak RSS {large['size']} vs {small['size']} images: ×{rss_ratio['main_mb']:.3f} (main), ×{rss_ratio['total_mb']:.3f} "
          f"(with workers), {growth_mb:+.1f} MB, goal ≤ {RSS_GOAL}; streamed / in memory: worst {worst_rate:.3f}, goal ≥ {RATE_GOAL}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
