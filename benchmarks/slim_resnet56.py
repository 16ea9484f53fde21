"""Slimming the CIFAR-10 ResNet-56 teacher: accuracy vs parameters at 30% and 50% of its channels removed,
before and after a short distillation from the unpruned teacher (and, beside it, the same fine-tune alone).

The evidence for das's network slimming (issue 13; Liu et al., ICCV 2017). The public ResNet-56
(``teachers/``) is slimmed by BatchNorm |γ| (das.prune.slim: one global cut-off, Torch-Pruning's
dependency graph, option-A shortcuts kept exact) at each ``--ratios`` fraction of its BatchNorm
channels; each slimmed network is tested as cut, then trained for ``--epochs`` on a seeded,
stratified subset of ``train_jpeg.npz`` either distilled from the unpruned network
(``distill``: ½ CE + ½ KD at T = 4, as benchmarks/cifar10_distill.py) or alone (``alone``: CE, the
same step size), and tested again on the full ``test_jpeg.npz``. The checkpoint was not trained
with the L1 penalty on γ, so by default it is slimmed as it is; ``--sparse-epochs N`` first trains
it N epochs with ``bn_l1`` (``--bn-l1``, alone), and then that sparse-trained network is both the
one slimmed and the teacher (prune.py's rule: distil from the network that was cut).

    python -m benchmarks.slim_resnet56 --ratios 0.3,0.5 --epochs 5 --seeds 0 \\
        --out benchmarks/results/slim_resnet56.json

Time, estimated from a timed run of this script (``--ratios 0.5 --train-images 1280 --val-images
128 --epochs 1``: 10 steps a run, 14 min in all) on the 2-core CPU machine while it was shared with
two other benchmarks (load average 4–5, 2026-12-02, 2 threads, channels-last): the teacher's
accuracy and the data subset 3.5 min (once), slimming 10 s, a training step of batch 128 on the
half-slimmed network 10 s distilled (the ResNet-56 teacher's forward included) and 6.3 s alone, a
pass over the 10,000 test images about 2 min. The defaults (10,000 images × 5 epochs = 390 steps
a run; 2 ratios × 2 variants; one seed) therefore take about 4.5 h under that load (the 30% network
is somewhat slower than the 50% one), about 1.2 h on 2 idle cores (scaled by the 4.5× between
ResNet-20's step under that load and idle, docs/results.md). ``--sparse-epochs N`` adds N epochs of
ResNet-56 training (~8 s a step under that load). Cut it with ``--epochs``, ``--train-images``,
``--variants`` or ``--ratios``; ``--accelerator gpu`` runs it on a GPU.
Measured (2026-12-03, one thread beside another one-thread benchmark): the four runs took
330–1,007 s each, about 40 min in all.

Without sparse training the checkpoint's γ are not sparse, so cutting is costly: in that timed run
the 50% network (``ratio`` 0.5 removes half of the channel *groups'* entries; a residual group
counts once however many BatchNorms scale it, so 28% of the BatchNorm channels went, leaving 41%
of the parameters) scored 14.4% as cut.

Each finished step (the teacher's accuracy, the sparse training, each slimming, each run) is
appended at once to ``OUT.runs.jsonl`` (first line: the settings); rerunning the command skips
what is done and refuses a file written with other settings. Networks, logs and checkpoints go to
``OUT.work/``.
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

from benchmarks.common import (LOGIT_TERMS, FitTimer, ResultsFile, code_version, fmt, machine_info, now_iso, parse_list, print_table,
                               runs_file, set_threads, spread, subset_file, write_json)
from das.cli import guarded
from das.data.datamodule import DasDataModule
from das.distill.fit import export_student, fit_and_test, make_trainer
from das.distill.module import DistillModule
from das.errors import DasError
from das.evaluate import top1_accuracy
from das.models import build_model
from das.paths import shared_data_dir
from das.prune.slim import SlimConfig, save_pruned, slim
from das.stats import count_flops, count_params

#: What each variant trains the slimmed network with.
VARIANTS: dict[str, dict[str, Any]] = {
    "distill": {"losses": LOGIT_TERMS},  # the teacher is the unpruned network
    "alone": {"losses": {"ce": 1.0}},  # the same step size as the ½ + ½ mix
}
INPUT = (3, 32, 32)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    data = shared_data_dir()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train-file", default=str(data / "cifar10" / "train_jpeg.npz"), help="training .npz the subset is drawn from")
    p.add_argument("--test-file", default=str(data / "cifar10" / "test_jpeg.npz"), help="test .npz, used whole")
    p.add_argument("--network", default="resnet56", help="the network slimmed (a teacher spec)")
    p.add_argument("--checkpoint", default=str(data / "teachers" / "cifar10_resnet56.th"), help="its trained weights")
    p.add_argument("--ratios", default="0.3,0.5", help="comma-separated fractions of BatchNorm channels removed")
    p.add_argument("--scope", default="global", choices=("global", "layer"), help="one |γ| cut-off, or every channel group alike")
    p.add_argument("--multiple", type=int, default=1, help="round kept channel counts up to a multiple of this")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--sparse-epochs", type=int, default=0, help="epochs of sparse training (bn_l1) before slimming; 0: slim the checkpoint")
    p.add_argument("--bn-l1", type=float, default=1e-4, help="λ of the sparse training")
    p.add_argument("--train-images", type=int, default=10000, help="images the networks train on: a stratified subset of --train-file")
    p.add_argument("--val-images", type=int, default=1000, help="further training-file images held out for val accuracy (0: none)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the subset and its validation split")
    p.add_argument("--epochs", type=int, default=5, help="epochs of each slimmed network's training")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch")
    p.add_argument("--lr", type=float, default=0.02, help="peak SGD learning rate of the fine-tunes (cosine to 0): below a from-scratch 0.05, the weights are trained")
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="linear warmup before the cosine schedule")
    p.add_argument("--limit-batches", type=int, default=None, help="at most this many train/val/test batches per epoch (smoke tests)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--accelerator", default="cpu", help="Lightning accelerator (cpu, gpu, auto)")
    p.add_argument("--no-progress", action="store_true", help="hide Lightning's progress bar")
    p.add_argument("--out", default="benchmarks/results/slim_resnet56.json", help="result JSON")
    return p.parse_args(list(argv))


def test_loader(data: DasDataModule, limit: int | None) -> Any:
    """The test batches (the first ``limit`` of them in smoke tests)."""
    return islice(data.test_dataloader(), limit) if limit else data.test_dataloader()


def trainer_for(args: argparse.Namespace, root: Path, epochs: int) -> L.Trainer:
    limits = {} if args.limit_batches is None else {f"limit_{s}_batches": args.limit_batches for s in ("train", "val", "test")}
    return make_trainer(root, epochs, accelerator=args.accelerator, progress=not args.no_progress, num_sanity_val_steps=0, **limits)


def unpruned_network(args: argparse.Namespace, data: DasDataModule, runs: ResultsFile, work: Path) -> str:
    """The weights file of the network that is slimmed (and teaches): the checkpoint, or its sparse-trained copy."""
    if args.sparse_epochs == 0:
        return args.checkpoint
    path = work / "sparse" / "student.pt"
    if runs.find(kind="sparse") is not None and path.is_file():
        return str(path)
    print(f"sparse training: {args.sparse_epochs} epochs with bn_l1 {args.bn_l1:g}", flush=True)
    shutil.rmtree(path.parent, ignore_errors=True)
    L.seed_everything(0, verbose=False)
    module = DistillModule(student=args.network, num_classes=data.num_classes, losses={"ce": 1.0, "bn_l1": args.bn_l1},
                           lr=args.lr, warmup_epochs=args.warmup_epochs, channels_last=True)
    module.student.load_state_dict(build_model(args.network, data.num_classes, checkpoint=args.checkpoint).state_dict())
    started = time.perf_counter()
    acc = fit_and_test(module, data, trainer_for(args, path.parent, args.sparse_epochs))
    export_student(module, path, test_acc=acc)
    if runs.find(kind="sparse") is None:
        runs.add({"kind": "sparse", "test_acc": acc, "epochs": args.sparse_epochs, "bn_l1": args.bn_l1,
                  "seconds": time.perf_counter() - started, "date": now_iso()})
    return str(path)


def slimmed_network(args: argparse.Namespace, data: DasDataModule, runs: ResultsFile, work: Path, unpruned: str, ratio: float) -> Path:
    """``pruned-<ratio>.pt`` (slimming is deterministic: redone if the file is gone), its record in the runs file."""
    path = work / f"pruned-{ratio:g}.pt"
    if runs.find(kind="slim", ratio=ratio) is not None and path.is_file():
        return path
    net = build_model(args.network, data.num_classes, checkpoint=unpruned)
    started = time.perf_counter()
    slimmed = slim(net, SlimConfig(ratio=ratio, scope=args.scope, multiple=args.multiple), INPUT)
    seconds = time.perf_counter() - started
    save_pruned(path, slimmed.model, slimmed.spec(args.network, data.num_classes))
    if runs.find(kind="slim", ratio=ratio) is None:
        report = slimmed.report()
        runs.add({"kind": "slim", "ratio": ratio, "params": report["params"], "flops": report["flops"], "bn_channels": report["bn_channels"],
                  "layers": report["layers"], "test_acc_before": top1_accuracy(slimmed.model, test_loader(data, args.limit_batches), "cpu"),
                  "seconds": seconds, "date": now_iso()})
    return path


def summarise(records: list[dict[str, Any]], ratios: list[float], variants: list[str], seeds: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ratio in ratios:
        cut = next((r for r in records if r.get("kind") == "slim" and r["ratio"] == ratio), None)
        row: dict[str, Any] = {"ratio": ratio, "params": cut and cut["params"], "flops": cut and cut["flops"],
                               "bn_channels": cut and cut["bn_channels"], "test_acc_before_training": cut and cut["test_acc_before"]}
        for variant in variants:
            runs = sorted((r for r in records if r.get("kind") == "run" and r["ratio"] == ratio and r["variant"] == variant and r["seed"] in seeds),
                          key=lambda r: r["seed"])
            row[variant] = {"n": len(runs), "seeds": [r["seed"] for r in runs], "test_acc": spread([r["test_acc"] for r in runs]),
                            "seconds_mean": statistics.fmean(r["seconds"] for r in runs) if runs else None}
        if "distill" in row and "alone" in row and row["distill"]["test_acc"]["mean"] is not None and row["alone"]["test_acc"]["mean"] is not None:
            row["distillation_gain"] = row["distill"]["test_acc"]["mean"] - row["alone"]["test_acc"]["mean"]
        out[f"{ratio:g}"] = row
    return out


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    ratios = parse_list(args.ratios, "ratios", float)
    if not all(0 < r < 1 for r in ratios):
        raise DasError(f"--ratios {args.ratios!r} must be fractions strictly between 0 and 1")
    variants = parse_list(args.variants, "variants")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise DasError(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    seeds = parse_list(args.seeds, "seeds", int)
    for key in ("train_images", "epochs", "batch_size", "multiple"):
        if getattr(args, key) < 1:
            raise DasError(f"--{key.replace('_', '-')} {getattr(args, key)} must be at least 1")
    if args.sparse_epochs < 0 or args.bn_l1 < 0:
        raise DasError("--sparse-epochs and --bn-l1 must be >= 0")
    threads = set_threads(args.threads)
    out = Path(args.out)
    work = out.with_name(out.name + ".work")
    identity = {"benchmark": "slim_resnet56", "train_file": Path(args.train_file).name, "test_file": Path(args.test_file).name,
                "network": args.network, "checkpoint": Path(args.checkpoint).name, "scope": args.scope, "multiple": args.multiple,
                "sparse_epochs": args.sparse_epochs, "bn_l1": args.bn_l1 if args.sparse_epochs else None,
                "train_images": args.train_images, "val_images": args.val_images, "data_seed": args.data_seed, "epochs": args.epochs,
                "batch_size": args.batch_size, "lr": args.lr, "warmup_epochs": args.warmup_epochs, "limit_batches": args.limit_batches,
                "logit_terms": LOGIT_TERMS}
    runs = runs_file(out, identity)
    pool = args.train_images + args.val_images
    data = DasDataModule(dataset="npz", train_file=str(subset_file(Path(args.train_file), pool, args.data_seed, work / "data")),
                         test_file=args.test_file, batch_size=args.batch_size, val_fraction=args.val_images / pool, seed=args.data_seed)
    sizes = {split: len(data.subset(split)) for split in ("train", "val", "test")}

    teacher = runs.find(kind="teacher")
    if teacher is None:
        net = build_model(args.network, data.num_classes, checkpoint=args.checkpoint)
        teacher = {"kind": "teacher", "test_acc": top1_accuracy(net, test_loader(data, args.limit_batches), "cpu"),
                   "params": count_params(net), "flops": count_flops(net, INPUT), "date": now_iso()}
        runs.add(teacher)
    print(f"{args.network}: {teacher['test_acc']:.2f}% test, {teacher['params']:,} params; slimmed networks train on {sizes['train']} images",
          flush=True)
    unpruned = unpruned_network(args, data, runs, work)

    def write() -> dict[str, Any]:
        result = {"benchmark": "slim_resnet56", "teacher": teacher, "sparse": runs.find(kind="sparse"),
                  "complete": all(runs.find(kind="run", ratio=r, variant=v, seed=s) for r in ratios for v in variants for s in seeds),
                  "results": summarise(runs.records, ratios, variants, seeds),
                  "settings": {**identity, "sizes": sizes, "ratios": ratios, "variants": variants, "seeds": seeds, "threads": threads,
                               "date": now_iso(), "machine": machine_info(), "code": code_version()}}
        write_json(out, result)
        return result

    for ratio in ratios:
        pruned = slimmed_network(args, data, runs, work, unpruned, ratio)
        for seed in seeds:
            for variant in variants:
                if runs.find(kind="run", ratio=ratio, variant=variant, seed=seed) is not None:
                    continue
                print(f"ratio {ratio:g}, {variant}, seed {seed}", flush=True)
                root = work / f"{ratio:g}-{variant}-seed{seed}"
                shutil.rmtree(root, ignore_errors=True)
                L.seed_everything(seed, verbose=False)
                teach = {"teacher": args.network, "teacher_checkpoint": unpruned} if variant == "distill" else {}
                module = DistillModule(student=str(pruned), num_classes=data.num_classes, lr=args.lr, warmup_epochs=args.warmup_epochs,
                                       input_size=INPUT, channels_last=True, **teach, **VARIANTS[variant])
                trainer = trainer_for(args, root, args.epochs)
                timer = FitTimer()
                trainer.callbacks.append(timer)
                started = time.perf_counter()
                acc = fit_and_test(module, data, trainer)
                runs.add({"kind": "run", "ratio": ratio, "variant": variant, "seed": seed, "test_acc": acc, "val_acc": timer.val_acc,
                          "seconds": time.perf_counter() - started, "fit_seconds": timer.seconds,
                          "images_per_s": trainer.global_step * args.batch_size / timer.seconds, "date": now_iso()})
                write()

    result = write()
    rows = []
    for res in result["results"].values():
        rows.append([f"{res['ratio']:g}", fmt(res["bn_channels"] and res["bn_channels"]["removed_fraction"], 3),
                     fmt(res["params"] and res["params"]["ratio"], 3), fmt(res["flops"] and res["flops"]["ratio"], 3),
                     fmt(res["test_acc_before_training"], 2), *(fmt(res[v]["test_acc"]["mean"], 2) for v in variants)])
    print(f"unpruned {args.network}: {teacher['test_acc']:.2f}%")
    print_table(["ratio", "BN channels removed", "params ×", "FLOPs ×", "as cut %", *(f"{v} %" for v in variants)], rows)
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
