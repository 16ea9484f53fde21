"""Pruning at initialisation on CIFAR-10: PX vs SNIP vs SynFlow vs random on a ResNet-20 at 10%, 5% and 2% density.

The evidence for das's at-init pruners (issue 13). Each run prunes a freshly initialised
ResNet-20 (the seed fixes the initialisation, the same for every method at that seed) to the
density, then trains it alone with the masks fixed under one schedule for every run: the same
seeded, stratified subset of ``train_jpeg.npz``, epochs, batch size and learning rate. A ``dense``
row trains the unpruned network on the same schedule, the ceiling. Methods, as das implements them
(das/prune/): ``px`` (Iurada et al., CVPR 2024; 100 rounds; reads ``--probe-batches`` of training
images), ``snip`` (Lee et al., ICLR 2019; one shot, same probe images), ``synflow`` (Tanaka et al.,
NeurIPS 2020; 100 rounds, data-free) and ``random``; all with one global ranking over every conv
and linear weight (the classifier included) and at least one weight kept per layer.

Reported per run: test accuracy on the full ``test_jpeg.npz`` before training (the pruned
initialisation) and after; each layer's kept weights and density; the sparsest layer; how many
layers are at the one-weight floor (a layer the method would have cut off entirely: das keeps one
weight in every layer, so "collapse" shows as layers at the floor); parameters and FLOPs left
(FLOPs counting only multiply-adds with a non-zero weight); pruning and training seconds.

    python -m benchmarks.prune_at_init_cifar --train-images 10000 --epochs 15 --seeds 0 \\
        --out benchmarks/results/prune_at_init_cifar.json

Time, estimated from a timed run of this script (``--methods px,synflow --densities 0.02
--train-images 1280 --val-images 128 --epochs 1 --rounds 10``: 10 steps a run, 8 min in all) on
the 2-core CPU machine while it was shared with two other benchmarks (load average 4–5,
2026-12-02, 2 threads, channels-last): a training step of batch 128 took 2.4 s dense and 3.1–3.3 s
masked (the difference is within that load's noise: a direct interleaved timing gave none), a
pass over the 10,000 test images 50 s, a PX round on 128 images 5.1 s, a SynFlow round 0.53 s.
The defaults (10,000 images × 15 epochs = 1,170 steps a run; 13 runs: 4 methods × 3 densities +
dense; one seed) therefore take about 13 h under that load: 12 masked runs × ~62 min, the dense
run ~48 min, PX's 100 rounds ~8.5 min × 3, SynFlow's ~1 min × 3. On 2 idle cores (docs/results.md: a
ResNet-20 step is 0.53 s there, about 4.5× faster) that is about 3 h. Cut it with ``--epochs``,
``--train-images``, ``--methods``, ``--densities`` or ``--rounds``; ``--accelerator gpu`` runs it
on a GPU.
Measured (2026-12-03, the defaults as one-thread processes splitting ``--methods``, sharing the
2 cores with other one-thread benchmarks, same ``--out``): 1.7 h of wall time, 7.5–10.9 min a run, PX's rounds ~140 s.

Each finished (method, density, seed) is appended at once to ``OUT.runs.jsonl`` (first line: the
settings); rerunning the command skips finished runs and refuses a file written with other
settings. Lightning's logs and checkpoints go to ``OUT.work/``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import lightning as L
import torch

from benchmarks.common import (FitTimer, code_version, fmt, machine_info, now_iso, parse_list, print_table, runs_file, set_threads, spread,
                               subset_file, write_json)
from das.cli import guarded
from das.data import probe_batches
from das.data.datamodule import DasDataModule
from das.distill.fit import fit_and_test, make_trainer
from das.distill.module import DistillModule
from das.errors import DasError
from das.paths import shared_data_dir
from das.prune import SALIENCIES, prune_at_init
from das.prune.masked_run import mask_student
from das.prune.sizes import density_section, masked_size
from das.prune.steps import test_batch_count
from das.evaluate import top1_accuracy

METHODS = ("px", "snip", "synflow", "random")
DENSITIES = (0.1, 0.05, 0.02)
DENSE = "dense"
#: A layer at the floor keeps this many weights: the one das's pruner always leaves.
FLOOR = 1


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    data = shared_data_dir()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train-file", default=str(data / "cifar10" / "train_jpeg.npz"), help="training .npz the subset is drawn from")
    p.add_argument("--test-file", default=str(data / "cifar10" / "test_jpeg.npz"), help="test .npz, used whole")
    p.add_argument("--student", default="resnet20", help="the network pruned and trained")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated pruning methods, from {', '.join(SALIENCIES.names())}")
    p.add_argument("--densities", default=",".join(map(str, DENSITIES)), help="comma-separated densities (fractions of weights kept)")
    p.add_argument("--no-dense", action="store_true", help="skip the dense reference run")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (initialisation, probe images, shuffling)")
    p.add_argument("--rounds", type=int, default=None, help="pruning rounds for every method (default: each method's own, px/synflow 100)")
    p.add_argument("--probe-batches", type=int, default=1, help="probe batches px and snip read")
    p.add_argument("--probe-batch-size", type=int, default=128, help="images per probe batch")
    p.add_argument("--train-images", type=int, default=10000, help="images the networks train on: a stratified subset of --train-file")
    p.add_argument("--val-images", type=int, default=1000, help="further training-file images held out for val accuracy (0: none)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the subset and its validation split (the same for every run)")
    p.add_argument("--epochs", type=int, default=15, help="training epochs")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch")
    p.add_argument("--lr", type=float, default=0.05, help="peak SGD learning rate (cosine schedule to 0)")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warmup before the cosine schedule")
    p.add_argument("--limit-batches", type=int, default=None, help="at most this many train/val/test batches per epoch (smoke tests)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--accelerator", default="cpu", help="Lightning accelerator (cpu, gpu, auto)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--out", default="benchmarks/results/prune_at_init_cifar.json", help="result JSON")
    return p.parse_args(list(argv))


def layer_summary(density: dict[str, Any]) -> dict[str, Any]:
    """The figures that show layer collapse: the sparsest layer and the layers left at the one-weight floor."""
    layers = density["layers"]
    sparsest = min(layers, key=lambda r: r["density"])
    return {"min_layer_density": sparsest["density"], "sparsest_layer": sparsest["name"], "min_layer_kept": min(r["kept"] for r in layers),
            "layers_at_floor": sum(r["kept"] <= FLOOR for r in layers), "layers": len(layers)}


def summarise(records: list[dict[str, Any]], methods: list[str], densities: list[float], seeds: list[int]) -> dict[str, Any]:
    """Per method and density: accuracy over seeds, and the layer figures of each seed's masks."""
    out: dict[str, Any] = {}
    keys = [(DENSE, 1.0)] * any(r.get("method") == DENSE for r in records) + [(m, d) for m in methods for d in densities]
    for method, density in keys:
        runs = sorted((r for r in records if r.get("kind") == "run" and r["method"] == method and r["density"] == density and r["seed"] in seeds),
                      key=lambda r: r["seed"])
        out[f"{method}@{density:g}"] = {
            "method": method, "density": density, "n": len(runs), "seeds": [r["seed"] for r in runs],
            "test_acc": spread([r["test_acc"] for r in runs]),
            "test_acc_before_training": spread([r["test_acc_before"] for r in runs]),
            "min_layer_density": spread([r["layers"]["min_layer_density"] for r in runs]),
            "layers_at_floor": [r["layers"]["layers_at_floor"] for r in runs],
            "params_after": runs[0]["params"]["after"] if runs else None, "flops_after": runs[0]["flops"]["after"] if runs else None,
            "prune_seconds_mean": statistics.fmean(r["prune_seconds"] for r in runs) if runs else None,
            "seconds_mean": statistics.fmean(r["seconds"] for r in runs) if runs else None,
        }
    return out


def run_one(args: argparse.Namespace, data: DasDataModule, method: str, density: float, seed: int, work: Path) -> dict[str, Any]:
    """Prune (unless dense), train and test one network; the record for the runs file."""
    root = work / f"{method}-{density:g}-seed{seed}"
    shutil.rmtree(root, ignore_errors=True)  # an interrupted run starts over; never resume another's checkpoint
    L.seed_everything(seed, verbose=False)
    module = DistillModule(student=args.student, teacher=None, num_classes=data.num_classes, losses={"ce": 1.0},
                           lr=args.lr, warmup_epochs=args.warmup_epochs, input_size=tuple(data.input_shape), channels_last=True)
    limits = {} if args.limit_batches is None else {f"limit_{s}_batches": args.limit_batches for s in ("train", "val", "test")}
    trainer = make_trainer(root, args.epochs, accelerator=args.accelerator, progress=not args.no_progress, num_sanity_val_steps=0, **limits)
    device = trainer.strategy.root_device
    started = time.perf_counter()
    if method == DENSE:
        masks: dict[str, torch.Tensor] = {}
    else:
        batches = probe_batches(data, args.probe_batch_size, args.probe_batches, seed) if SALIENCIES.get(method).needs_data else None
        student = module.student.to(device)
        masks = prune_at_init(student, method, density, batches, rounds=args.rounds, seed=seed,
                              input_shape=tuple(data.input_shape), progress=not args.no_progress)
        module.student.cpu()
        mask_student(module, {k: v.cpu() for k, v in masks.items()})
    prune_seconds = time.perf_counter() - started
    density_rows = density_section(module.student)
    dense_size, pruned_size = masked_size(module.student, masks, tuple(data.input_shape))
    tests = test_batch_count(trainer, data)
    before = top1_accuracy(module.student, islice(data.test_dataloader(), tests), "cpu")
    timer = FitTimer()
    trainer.callbacks.append(timer)
    test_acc = fit_and_test(module, data, trainer)
    images = trainer.global_step * args.batch_size
    return {
        "kind": "run", "method": method, "density": density, "seed": seed, "test_acc": test_acc, "test_acc_before": before,
        "val_acc": timer.val_acc, "overall_density": density_rows["overall"]["density"], "layers": layer_summary(density_rows),
        "per_layer": [{k: r[k] for k in ("name", "kept", "total", "density")} for r in density_rows["layers"]],
        "params": {"before": dense_size.params, "after": pruned_size.params}, "flops": {"before": dense_size.flops, "after": pruned_size.flops},
        "prune_seconds": prune_seconds, "seconds": time.perf_counter() - started, "fit_seconds": timer.seconds,
        "images_per_s": images / timer.seconds, "train_images_seen": images, "date": now_iso(),
    }


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    methods = parse_list(args.methods, "methods")
    unknown = [m for m in methods if m not in SALIENCIES]
    if unknown:
        raise DasError(f"--methods: unknown {unknown}; choose from {', '.join(SALIENCIES.names())}")
    densities = parse_list(args.densities, "densities", float)
    if not all(0 < d < 1 for d in densities):
        raise DasError(f"--densities {args.densities!r} must be fractions strictly between 0 and 1")
    seeds = parse_list(args.seeds, "seeds", int)
    for key in ("train_images", "epochs", "batch_size", "probe_batches", "probe_batch_size"):
        if getattr(args, key) < 1:
            raise DasError(f"--{key.replace('_', '-')} {getattr(args, key)} must be at least 1")
    threads = set_threads(args.threads)
    out = Path(args.out)
    work = out.with_name(out.name + ".work")
    identity = {"benchmark": "prune_at_init_cifar", "train_file": Path(args.train_file).name, "test_file": Path(args.test_file).name,
                "train_images": args.train_images, "val_images": args.val_images, "data_seed": args.data_seed, "student": args.student,
                "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "warmup_epochs": args.warmup_epochs,
                "limit_batches": args.limit_batches, "rounds": args.rounds, "probe_batches": args.probe_batches,
                "probe_batch_size": args.probe_batch_size, "scope": "global"}
    runs = runs_file(out, identity)
    pool = args.train_images + args.val_images
    data = DasDataModule(dataset="npz", train_file=str(subset_file(Path(args.train_file), pool, args.data_seed, work / "data")),
                         test_file=args.test_file, batch_size=args.batch_size, val_fraction=args.val_images / pool, seed=args.data_seed)
    sizes = {split: len(data.subset(split)) for split in ("train", "val", "test")}
    print(f"{args.student} on {sizes['train']} training images, tested on {sizes['test']}; {len(methods)} methods × {len(densities)} densities", flush=True)

    def write() -> dict[str, Any]:
        results = summarise(runs.records, methods, densities, seeds)
        result = {"benchmark": "prune_at_init_cifar", "complete": all(r["n"] == len(seeds) for r in results.values()),
                  "results": results,
                  "settings": {**identity, "sizes": sizes, "methods": methods, "densities": densities, "seeds": seeds, "threads": threads,
                               "date": now_iso(), "machine": machine_info(), "code": code_version()}}
        write_json(out, result)
        return result

    plan = ([] if args.no_dense else [(DENSE, 1.0)]) + [(m, d) for d in densities for m in methods]
    # Seed-major, density-major: a table cut short has every method at a density before the next.
    todo = [(m, d, s) for s in seeds for m, d in plan if runs.find(kind="run", method=m, density=d, seed=s) is None]
    for i, (method, density, seed) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {method} at density {density:g}, seed {seed}", flush=True)
        runs.add(run_one(args, data, method, density, seed, work))
        write()

    result = write()
    rows = []
    for res in result["results"].values():
        acc = res["test_acc"]
        rows.append([res["method"], f"{res['density']:g}", str(res["n"]), f"{fmt(acc['mean'], 2)} ± {fmt(acc['std'], 2)}",
                     fmt(res["test_acc_before_training"]["mean"], 2), fmt(res["min_layer_density"]["mean"], 4),
                     ",".join(map(str, res["layers_at_floor"])), f"{res['params_after']:,}" if res["params_after"] else "—"])
    print_table(["method", "density", "seeds", "test acc % (mean ± std)", "before training %", "sparsest layer", "layers at floor", "params"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
