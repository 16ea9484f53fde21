"""What does Lightning cost? Images per second of train.py's training against a plain PyTorch loop.

Both paths do the same work on the same data: a DistillModule distilling the public CIFAR-10
ResNet-56 (``teachers/``) into a ResNet-20 with CE + KD (T = 4) + the cosine loss on the final
feature maps, SGD and the cosine schedule as the module configures them, on a seeded, stratified
subset of ``train_jpeg.npz`` read through das's ``DasDataModule`` (``dataset="npz"``, train.py's
CIFAR augmentation) with the same batch size and DataLoader workers. Each round starts from the
same seed, so both paths draw the same initial weights, the same batches and the same crops.

- ``lightning``: ``Trainer.fit`` from :func:`das.distill.fit.make_trainer`, as train.py trains:
  the module's own ``training_step`` (its finiteness check and its logged metrics), the CSV
  logger (``make_trainer`` logs every 10 steps, train.py's CLI every 50: this errs towards
  more overhead), ``last.ckpt`` written at the end of each epoch (train.py keeps only that one
  when there is no validation), progress bar off, validation off in both paths.
- ``plain``: ``for x, y in loader``: the module's own ``compute_losses`` (so the loss maths is
  identical), ``zero_grad``, ``backward``, ``step``, and the scheduler's step; no logging, no
  checkpoint.

One round is one epoch of ``--batches`` batches. The paths alternate, plain then Lightning, for
``--repeats`` rounds each, so a change in the load of a shared machine hits both alike. A
round's images per second count the batches after the first ``--warmup`` (lazy initialisation,
DataLoader start-up), up to the end of the round: for Lightning, until ``fit`` returns, so its
end-of-epoch checkpoint and log flush are charged (``steady_images_per_s`` stops at the last
batch instead). The JSON reports each path's median, the ratio lightning / plain of the medians
(goal: Lightning costs at most 5% of the throughput, a ratio >= 0.95), the median of the
per-round ratios, whether both paths ended each round on the same loss, the machine and the load
average at start and end. The subset and Lightning's logs and checkpoints live in a temporary
folder, removed at the end.

    python -m benchmarks.lightning_overhead --batches 78 --repeats 5 --batch-size 128 --threads 2 \\
        --out benchmarks/results/lightning_overhead.json
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from benchmarks.common import code_version, fmt, machine_info, now_iso, print_table, set_threads, write_json
from das.cli import guarded
from das.data.datamodule import DasDataModule
from das.data.splits import stratified_split
from das.distill.fit import checkpoint_callbacks, make_trainer
from das.distill.module import DistillModule
from das.distill.optim import build_optimizer, build_scheduler, param_groups
from das.errors import DasError
from das.paths import shared_data_dir

#: The work timed: train.py's CIFAR-10 recipe (configs/distill/cifar10_resnet56.yaml).
LOSSES = {"ce": 1.0, "kd": {"weight": 1.0, "temperature": 4.0}, "cosine": {"weight": 1.0, "scale": 1.0}}
GOAL = 0.05  # Lightning may cost at most 5% of the plain loop's throughput
PATHS = ("plain", "lightning")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    data = shared_data_dir()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batches", type=int, default=78, help="batches per round, one epoch (78 × 128: cifar10_distill's 10,000-image epoch)")
    p.add_argument("--repeats", type=int, default=5, help="rounds of each path, interleaved plain, lightning, plain, ...")
    p.add_argument("--warmup", type=int, default=None, help="untimed batches at the start of each round (default 5, or half of --batches if fewer)")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (the same for both paths)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--train-file", default=str(data / "cifar10" / "train_jpeg.npz"), help="training .npz the subset is drawn from")
    p.add_argument("--teacher-checkpoint", default=str(data / "teachers" / "cifar10_resnet56.th"), help="the ResNet-56 teacher's weights")
    p.add_argument("--lr", type=float, default=0.1, help="peak SGD learning rate (the CIFAR config's)")
    p.add_argument("--seed", type=int, default=0, help="seeds the subset, the weights and the batch order of every round")
    p.add_argument("--out", default="benchmarks/results/lightning_overhead.json", help="result JSON")
    return p.parse_args(list(argv))


def check_args(args: argparse.Namespace) -> int:
    """The warm-up batches, after refusing settings that leave nothing to time."""
    for key in ("batches", "repeats", "batch_size"):
        if getattr(args, key) < 1:
            raise DasError(f"--{key.replace('_', '-')} {getattr(args, key)} must be at least 1")
    if args.workers < 0:
        raise DasError(f"--workers {args.workers} must be >= 0")
    warmup = min(5, args.batches // 2) if args.warmup is None else args.warmup
    if not 1 <= warmup < args.batches:
        raise DasError(f"--warmup {warmup} must be at least 1 and fewer than --batches {args.batches}, so some batches are timed")
    return warmup


def subset_file(source: Path, images: int, seed: int, folder: Path) -> tuple[Path, int]:
    """A seeded, stratified subset of ``source`` with at least ``images`` images, as an npz in ``folder``."""
    with np.load(source, allow_pickle=False) as data:
        x, y = data["x"], data["y"]
    classes = len(np.unique(y))
    if images > len(y):
        raise DasError(f"--batches × --batch-size = {images} images, more than the {len(y)} of {source}; lower either")
    # Each class rounds its share to the nearest image, losing at most half an image per class.
    _, picked = stratified_split(torch.from_numpy(y.astype(np.int64)), min(1.0, (images + classes) / len(y)), seed)
    path = folder / "subset.npz"
    np.savez(path, x=x[picked.numpy()], y=y[picked.numpy()])
    return path, len(picked)


def build_module(teacher_checkpoint: str, num_classes: int, lr: float, seed: int) -> DistillModule:
    L.seed_everything(seed, verbose=False)
    return DistillModule(student="resnet20", teacher="resnet56", teacher_checkpoint=teacher_checkpoint, num_classes=num_classes,
                         losses=LOSSES, feature_pairs="final", lr=lr)


class BatchClock(Callback):
    """The time at the end of each training batch, and the last batch's loss."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.loss: torch.Tensor | None = None

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ends.append(time.perf_counter())
        self.loss = outputs["loss"].detach()


def lightning_round(module: DistillModule, data: DasDataModule, batches: int, root: Path) -> tuple[list[float], float, float]:
    """(end time of each batch, time fit returned, last loss) of one Lightning epoch."""
    clock = BatchClock()
    trainer = make_trainer(root, 1, accelerator="cpu", progress=False, max_steps=batches, limit_train_batches=batches)
    # As train.py without validation: last.ckpt only (make_trainer's best.ckpt would watch a val/acc never logged).
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)] + checkpoint_callbacks(root, monitor=None) + [clock]
    trainer.fit(module, datamodule=data)
    done = time.perf_counter()
    if len(clock.ends) != batches or clock.loss is None:
        raise DasError(f"Lightning ran {len(clock.ends)} batches, not {batches}; the subset is too small for --batches")
    return clock.ends, done, float(clock.loss)


def plain_round(module: DistillModule, data: DasDataModule, batches: int) -> tuple[list[float], float, float]:
    """(end time of each batch, end time, last loss) of the same epoch as a bare PyTorch loop."""
    cfg = module.optim  # the optimiser and schedule exactly as DistillModule.configure_optimizers builds them
    optimizer = build_optimizer(param_groups([module.student, module.projectors], cfg.weight_decay, cfg.decay_norm_and_bias), cfg)
    scheduler = build_scheduler(optimizer, cfg, batches, float(batches))
    module.train()  # the student trains; the module keeps its teacher in eval mode
    ends: list[float] = []
    loss = None
    for x, y in islice(data.train_dataloader(), batches):
        _, values = module.compute_losses(x, y)
        loss = values.total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        ends.append(time.perf_counter())
    if len(ends) != batches or loss is None:
        raise DasError(f"the loader gave {len(ends)} batches, not {batches}; the subset is too small for --batches")
    return ends, ends[-1], float(loss.detach())


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    warmup = check_args(args)
    threads = set_threads(args.threads)
    for name in ("train_file", "teacher_checkpoint"):
        if not Path(getattr(args, name)).is_file():
            raise DasError(f"--{name.replace('_', '-')} {getattr(args, name)} does not exist; give the file (or set DAS_DATA to a copy of shared/data)")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available" banner each round
    # Lightning's advice on workers, on the absent validation and on short epochs: known and intended here.
    warnings.filterwarnings("ignore", message=r".*(does not have many workers|Total length of `list`|smaller than the logging interval).*")
    load_start = os.getloadavg()
    timed_images = (args.batches - warmup) * args.batch_size
    rounds: dict[str, list[dict[str, float]]] = {p: [] for p in PATHS}
    with tempfile.TemporaryDirectory(prefix="lightning_overhead-") as tmp:
        work = Path(tmp)
        subset, images = subset_file(Path(args.train_file), args.batches * args.batch_size, args.seed, work)
        # val_fraction 0: no validation in either path; the test split is never read (the subset stands in for it).
        data = DasDataModule(dataset="npz", train_file=str(subset), test_file=str(subset), batch_size=args.batch_size,
                             num_workers=args.workers, val_fraction=0.0, seed=args.seed)
        num_classes = data.num_classes
        for r in range(args.repeats):
            for path in PATHS:
                module = build_module(args.teacher_checkpoint, num_classes, args.lr, args.seed)  # reseeds: same weights, batches, crops
                if path == "plain":
                    ends, done, loss = plain_round(module, data, args.batches)
                else:
                    ends, done, loss = lightning_round(module, data, args.batches, work / f"lightning-{r}")
                start = ends[warmup - 1]
                rounds[path].append({"images_per_s": timed_images / (done - start),
                                     "steady_images_per_s": timed_images / (ends[-1] - start),
                                     "seconds": done - start, "last_loss": loss})
                print(f"round {r + 1}/{args.repeats} {path:9s} {rounds[path][-1]['images_per_s']:8.1f} images/s", flush=True)
    load_end = os.getloadavg()

    def median(path: str, key: str = "images_per_s") -> float:
        return statistics.median(x[key] for x in rounds[path])

    ratio = median("lightning") / median("plain")
    paired = [lit["images_per_s"] / pl["images_per_s"] for pl, lit in zip(rounds["plain"], rounds["lightning"])]
    result = {
        "benchmark": "lightning_overhead",
        "images_per_s": {p: {"median": median(p), "steady_median": median(p, "steady_images_per_s"), "rounds": rounds[p]} for p in PATHS},
        "ratio": ratio,  # lightning / plain, of the median images per second
        "overhead_percent": 100.0 * (1.0 - ratio),
        "paired_ratio_median": statistics.median(paired),
        "steady_ratio": median("lightning", "steady_images_per_s") / median("plain", "steady_images_per_s"),
        # The same work: from the same seed, both paths end each round on the same loss.
        "same_last_loss": all(math.isclose(pl["last_loss"], lit["last_loss"], rel_tol=1e-5) for pl, lit in zip(rounds["plain"], rounds["lightning"])),
        "goal": f"lightning costs at most {100 * GOAL:g}% (ratio >= {1 - GOAL:g})",
        "meets_goal": ratio >= 1.0 - GOAL,
        "settings": {
            "batches": args.batches, "warmup": warmup, "repeats": args.repeats, "batch_size": args.batch_size, "workers": args.workers,
            "threads": threads, "subset_images": images, "timed_images_per_round": timed_images, "seed": args.seed, "lr": args.lr,
            "student": "resnet20", "teacher": "resnet56", "teacher_checkpoint": Path(args.teacher_checkpoint).name,
            "losses": LOSSES, "feature_pairs": "final", "train_file": Path(args.train_file).name, "order": "plain, lightning per round",
            "load_average_start": list(load_start), "load_average_end": list(load_end),
            "date": now_iso(), "machine": machine_info(), "lightning": L.__version__, "code": code_version(),
        },
    }
    write_json(args.out, result)
    print(f"\n{args.repeats} rounds × {args.batches} batches of {args.batch_size} ({warmup} untimed), {threads} threads, "
          f"{args.workers} workers; load {load_start[0]:.2f} → {load_end[0]:.2f}; results → {args.out}")
    print_table(["path", "median images/s", "steady median"],
                [[p, fmt(median(p), 1), fmt(median(p, "steady_images_per_s"), 1)] for p in PATHS])
    print(f"lightning / plain: {ratio:.3f} (Lightning costs {result['overhead_percent']:.1f}%; goal ≤ {100 * GOAL:g}%: "
          f"{'met' if result['meets_goal'] else 'not met'}); per-round median {result['paired_ratio_median']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
