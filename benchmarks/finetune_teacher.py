"""Fine-tune a CIFAR teacher at another image size, for a ground truth the CPU can afford.

The distillation ground truth (``benchmarks/distill_ground_truth.py``) trains dozens of students
twice each; at 32×32 that is out of reach of the 2-core CPU machine, at 16×16 a forward+backward
costs about a quarter (measured: ResNet-20, batch 128, 1 thread: 1.34 s at 32×32, 0.34 s at
16×16). NAS-Bench-201's own ImageNet16-120 is 16×16. But the public ResNet-56 was trained at
32×32 and scores far lower on 16×16 inputs, so it must first be fine-tuned at that size.

This script reads the teacher's checkpoint, resizes ``train_jpeg.npz`` once to ``--image-size``
(das's data module: antialiased bilinear), holds out a seeded, stratified ``--val-images`` for
validation, and fine-tunes every weight with cross-entropy, SGD + Nesterov, cosine from
``--lr`` to 0 over ``--epochs``, random crop (padding size/8) and flip, batch 128, channels-last,
through das's Lightning module (``DistillModule`` without a teacher). It writes the weights as a
checkpoint any das command loads (``--teacher-checkpoint``, ``teacher.checkpoint``) and a JSON with
the teacher's test accuracy on ``test_jpeg.npz`` at both sizes before and after. Interrupted, it
resumes from its ``last.ckpt``; finished, it is not redone.

    python -m benchmarks.finetune_teacher --image-size 16 --epochs 10 \\
        --out benchmarks/results/teachers/cifar10_resnet56_16px.pt
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from benchmarks.common import code_version, machine_info, now_iso, set_threads, write_json
from das.cli import guarded
from das.data.datamodule import DasDataModule
from das.distill.fit import fit_and_test, last_checkpoint, make_trainer
from das.distill.module import DistillModule
from das.errors import DasError
from das.evaluate import top1_accuracy
from das.models import build_model
from das.paths import shared_data_dir
from teachers import load_checkpoint


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    data = shared_data_dir()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--teacher", default="resnet56", help="teacher spec")
    p.add_argument("--teacher-checkpoint", default=str(data / "teachers" / "cifar10_resnet56.th"), help="the weights to start from")
    p.add_argument("--train-file", default=str(data / "cifar10" / "train_jpeg.npz"), help="training .npz, used whole but for --val-images")
    p.add_argument("--test-file", default=str(data / "cifar10" / "test_jpeg.npz"), help="test .npz")
    p.add_argument("--image-size", type=int, default=16, help="the side the teacher is fine-tuned at")
    p.add_argument("--val-images", type=int, default=1000, help="training images held out for validation")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs")
    p.add_argument("--lr", type=float, default=0.02, help="peak SGD learning rate, cosine to 0 (a fine-tune: below the 0.1 of training from scratch)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step")
    p.add_argument("--seed", type=int, default=0, help="seeds the validation split, batch order and augmentation")
    p.add_argument("--limit-batches", type=int, default=None, help="at most this many train/val/test batches per epoch (smoke tests)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide Lightning's progress bar")
    p.add_argument("--out", default="benchmarks/results/teachers/cifar10_resnet56_16px.pt", help="the fine-tuned checkpoint; OUT.json beside it")
    return p.parse_args(list(argv))


def data_module(args: argparse.Namespace, image_size: int | None, val_images: int) -> DasDataModule:
    dm = DasDataModule(dataset="npz", train_file=args.train_file, test_file=args.test_file, image_size=image_size,
                       batch_size=args.batch_size, val_fraction=0.0, seed=args.seed)
    total = len(dm.splits.train)
    if not 0 <= val_images < total:
        raise DasError(f"--val-images {val_images} must be between 0 and the {total - 1} training images of {args.train_file}")
    if val_images:
        dm = DasDataModule(dataset="npz", train_file=args.train_file, test_file=args.test_file, image_size=image_size,
                           batch_size=args.batch_size, val_fraction=val_images / total, seed=args.seed)
    return dm


def test_accuracy(net: torch.nn.Module, dm: DasDataModule, limit: int | None) -> float:
    loader = dm.test_dataloader()
    if limit is not None:
        loader = [b for _, b in zip(range(limit), loader)]
    return top1_accuracy(net, loader, device="cpu")


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    for key in ("image_size", "epochs", "batch_size"):
        if getattr(args, key) < 1:
            raise DasError(f"--{key.replace('_', '-')} {getattr(args, key)} must be at least 1")
    if args.lr <= 0:
        raise DasError(f"--lr {args.lr} must be > 0")
    for name in ("teacher_checkpoint", "train_file", "test_file"):
        if not Path(getattr(args, name)).is_file():
            raise DasError(f"--{name.replace('_', '-')} {getattr(args, name)} does not exist; give the file (or set DAS_DATA to a copy of shared/data)")
    out = Path(args.out)
    report = out.with_suffix(".json")
    if out.is_file() and report.is_file():
        print(f"{out} is already fine-tuned ({report}); remove both to redo it")
        return 0
    threads = set_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    started = time.perf_counter()
    small = data_module(args, args.image_size, args.val_images)
    native = data_module(args, None, 0)
    if small.input_shape[-1] != args.image_size:
        raise DasError(f"--image-size {args.image_size}: the data module gave {small.input_shape[-1]}-pixel images")
    start = build_model(args.teacher, small.num_classes, checkpoint=args.teacher_checkpoint).eval()
    before = {"native": test_accuracy(start, native, args.limit_batches), "small": test_accuracy(start, small, args.limit_batches)}
    print(f"{args.teacher} before fine-tuning: {before['native']:.2f}% at {native.input_shape[-1]}x{native.input_shape[-1]}, "
          f"{before['small']:.2f}% at {args.image_size}x{args.image_size} ({len(small.subset('test'))} test images)", flush=True)

    L.seed_everything(args.seed, verbose=False)
    module = DistillModule(student=args.teacher, num_classes=small.num_classes, losses={"ce": 1.0}, lr=args.lr,
                           input_size=small.input_shape, channels_last=True)
    load_checkpoint(module.student, args.teacher_checkpoint)  # strict: every weight is the public teacher's
    root = out.with_name(out.stem + ".work")
    limits: dict[str, Any] = {} if args.limit_batches is None else {
        "limit_train_batches": args.limit_batches, "limit_val_batches": args.limit_batches, "limit_test_batches": args.limit_batches}
    trainer = make_trainer(root, args.epochs, accelerator="cpu", progress=not args.no_progress, num_sanity_val_steps=0, **limits)
    fit_started = time.perf_counter()
    after_small = fit_and_test(module, small, trainer, ckpt_path=last_checkpoint(root))  # last epoch's weights (trainer.test on the fitted module)
    fit_seconds = time.perf_counter() - fit_started
    net = module.student.to(memory_format=torch.contiguous_format).eval()
    after = {"small": after_small, "native": test_accuracy(net, native, args.limit_batches)}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict(), "teacher": args.teacher, "image_size": args.image_size}, out)
    write_json(report, {
        "benchmark": "finetune_teacher", "teacher": args.teacher, "from_checkpoint": Path(args.teacher_checkpoint).name,
        "checkpoint": out.name, "image_size": args.image_size, "native_size": native.input_shape[-1],
        "test_acc_before": before, "test_acc_after": after, "test_images": len(small.subset("test")),
        "val_acc_last_epoch": None if (v := trainer.callback_metrics.get("val/acc")) is None else 100.0 * float(v),
        "settings": {**{k: v for k, v in vars(args).items() if k != "no_progress"}, "train_images": len(small.subset("train")),
                     "threads": threads, "augment": list(small.augment), "optimizer": "sgd (nesterov, momentum 0.9, wd 5e-4)",
                     "schedule": "cosine", "checkpoint_rule": "last epoch"},
        "fit_seconds": fit_seconds, "seconds": time.perf_counter() - started,
        "date": now_iso(), "machine": machine_info(), "code": code_version(),
    })
    print(f"{args.teacher} after {args.epochs} epochs at {args.image_size}x{args.image_size}: {after['small']:.2f}% "
          f"(was {before['small']:.2f}%); at {native.input_shape[-1]}x{native.input_shape[-1]} {after['native']:.2f}% "
          f"(was {before['native']:.2f}%); {fit_seconds / 60:.1f} min -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
