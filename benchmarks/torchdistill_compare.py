"""das beside torchdistill: the same KD step's images per second, and the accuracy after the same short schedule.

Issue "Real datasets and accelerators", item 4. torchdistill (Matsubara, "torchdistill: A Modular,
Configuration-Driven Framework for Knowledge Distillation", RRPR 2020) is what a distillation
user would otherwise pick. Both sides distil the public CIFAR-10 ResNet-56
(``../shared/data/teachers/cifar10_resnet56.th``) into a ResNet-20 on CIFAR-10 at 32×32:

- **the same KD**: torchdistill's CIFAR-10 KD samples (``configs/sample/cifar10/kd/*``): its
  ``KDLoss`` with temperature 4 and alpha 0.9, i.e. 0.9 · CE + 0.1 · T² · KL(teacher ‖ student);
  das configured identically, ``losses: {ce: 0.9, kd: {weight: 0.1, temperature: 4}}``, so
  das's cosine feature loss (on by default in train.py) is **off** here, and no feature map is
  captured on either side. The teacher is frozen and in eval mode on both sides (torchdistill's
  example script leaves it in train mode; ``torchdistill_side`` calls ``.eval()`` on it);
- **the same networks and weights**: das's CIFAR ResNets (torchdistill's own CIFAR ResNets use
  1×1-convolution shortcuts and cannot load the public option-A checkpoint) handed to
  torchdistill as any ``nn.Module``; the student starts from the same initial weights on both
  sides (drawn once with ``--seed``); PyTorch's default contiguous layout on both (das's
  ``channels_last``, which its CIFAR-10 config turns on, is off);
- **the same optimizer**: torchdistill's CIFAR-10 sample's SGD (lr 0.1, momentum 0.9, no
  Nesterov, weight decay 1e-4 on every parameter: das's ``nesterov: false,
  decay_norm_and_bias: true``), batch 128, the same threads on both sides.

**Speed.** One training step on one fixed batch of 128 training images: the teacher's forward
(no gradient), the student's forward and backward, the loss, the optimizer step. das's step is
``DistillModule.compute_losses`` then backward and step (``benchmarks.throughput``'s das step:
the step train.py runs inside Lightning, whose own cost ``lightning_overhead`` measures);
torchdistill's is its ``DistillationBox.forward_process`` then ``post_forward_process``, the two
calls its example script makes per batch; the **plain PyTorch loop** is ``throughput``'s floor
with the same two terms written out. The three alternate in one invocation for ``--rounds``
rounds (das → torchdistill → plain, then torchdistill → plain → das, ...: each round starts one
side later, so no side is always first); each is a block of ``--warmup`` untimed then ``--steps``
timed steps (``throughput.timed``), torchdistill's in its own process while this one waits, and
das's and the floor's while torchdistill's waits. Reported: each side's median images per
second, the ratio das / torchdistill of the medians (goal ≥ 1) and the median of the per-round
ratios, das / plain (goal ≥ 0.9: within 10% of the floor). No LR scheduler steps in the timed
blocks, on either side. One ordering difference is das's own: ``compute_losses`` runs the
student before the teacher, torchdistill and the floor the teacher first.

**Accuracy.** Both sides train from the same initial student on the same batches in the same
order: ``--epochs`` passes over a seeded, stratified ``--train-images`` of ``train_jpeg.npz``,
each pass a fresh shuffle (dropping the remainder) with train.py's CIFAR augmentation (random
crop with 4-pixel padding, horizontal flip), all drawn once by this script and normalised by
das's ``eval_transform`` (the teacher's ImageNet statistics) on both sides; the learning rate
anneals from 0.1 to 0 by a per-step cosine (torchdistill: ``CosineAnnealingLR`` with
``scheduling_step: 1``; das: ``schedule: cosine``). das trains through Lightning
(``das.distill.fit.make_trainer``, ``DistillModule.training_step``), torchdistill through its
box's loop. Then each student's top-1 on ``--test-images`` of ``test_jpeg.npz`` (0: all 10,000).
With the same weights, batches and maths the two should differ by float rounding only: the JSON
gives both first-step losses (equal up to float rounding), the largest difference between the two
runs' per-step losses, and the accuracies' difference.

torchdistill comes from the package index into its own virtual environment, never into das's
and never vendored; ``--system-site-packages`` lets it use das's torch build (so both sides run
the same kernels) and import das's network definitions, while torchdistill and its own
dependencies (Cython, a newer setuptools) stay in the venv::

    python -m venv --system-site-packages /work/venvs/torchdistill
    /work/venvs/torchdistill/bin/pip install torchdistill   # 1.1.5 here; torch, torchvision are das's

The full comparison (not run yet at this size: about 20 minutes estimated from the smoke run's ~120
images/s on one thread), then a quick check (under a minute)::

    OMP_NUM_THREADS=2 python -m benchmarks.torchdistill_compare --torchdistill-python /work/venvs/torchdistill/bin/python \\
        --threads 2 --rounds 5 --steps 20 --warmup 3 --train-images 5000 --epochs 10 --test-images 0 \\
        --out benchmarks/results/torchdistill_compare.json
    python -m benchmarks.torchdistill_compare --torchdistill-python /work/venvs/torchdistill/bin/python --threads 1 \\
        --rounds 2 --steps 2 --warmup 1 --train-images 256 --epochs 1 --test-images 200 --out /tmp/tdc.json

``--parts speed`` or ``--parts accuracy`` runs one half. The das step is timed in this process;
torchdistill's side is ``benchmarks.torchdistill_side``, run by the venv's Python in a
subprocess that answers in JSON lines (its stderr goes to ``<OUT without .json>.torchdistill.log``
while it runs and is kept only when it fails).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from benchmarks.common import code_version, load_average, machine_info, now_iso, set_threads, subset_file, write_json
from benchmarks.throughput import das_loss, plain_loss, timed, training_step
from das.cli import guarded
from das.data.datamodule import DasDataModule
from das.data.splits import ImageDataset, ImageSplit
from das.data.transforms import AUGMENTATIONS, eval_transform
from das.distill.fit import make_trainer
from das.distill.module import DistillModule
from das.distill.optim import build_optimizer, param_groups
from das.errors import DasError
from das.evaluate import top1_accuracy
from das.paths import REPO_ROOT, shared_data_dir
from das.report.inputs import require_file

TEACHER, STUDENT, CLASSES = "resnet56", "resnet20", 10
PARTS = ("speed", "accuracy")
SIDES = ("das", "torchdistill", "plain")
VENV = "python -m venv --system-site-packages /work/venvs/torchdistill && /work/venvs/torchdistill/bin/pip install torchdistill"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    data = shared_data_dir()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--torchdistill-python", default=None, help=f"the Python of a venv with torchdistill (make one: {VENV})")
    p.add_argument("--parts", default="speed,accuracy", help="comma list of speed, accuracy")
    p.add_argument("--train-file", default=str(data / "cifar10" / "train_jpeg.npz"), help="CIFAR-10 training images (.npz)")
    p.add_argument("--test-file", default=str(data / "cifar10" / "test_jpeg.npz"), help="CIFAR-10 test images (.npz)")
    p.add_argument("--teacher-checkpoint", default=str(data / "teachers" / "cifar10_resnet56.th"), help="the ResNet-56 teacher's weights")
    p.add_argument("--batch", type=int, default=128, help="images per training step, both sides")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads on both sides (0: torch's default here, passed on)")
    p.add_argument("--rounds", type=int, default=5, help="speed: alternating rounds (das, torchdistill, plain)")
    p.add_argument("--steps", type=int, default=20, help="speed: timed steps per block")
    p.add_argument("--warmup", type=int, default=3, help="speed: untimed steps before each block")
    p.add_argument("--train-images", type=int, default=5000, help="accuracy: stratified training subset (at least --batch)")
    p.add_argument("--epochs", type=int, default=10, help="accuracy: passes over the subset")
    p.add_argument("--test-images", type=int, default=0, help="accuracy: stratified test subset (0: the whole test file)")
    p.add_argument("--seed", type=int, default=0, help="the subsets, the student's initial weights, the shuffles and crops")
    p.add_argument("--temperature", type=float, default=4.0, help="KD temperature (torchdistill's CIFAR-10 KD sample: 4)")
    p.add_argument("--alpha", type=float, default=0.9, help="CE weight; KD weighs 1 - alpha (torchdistill's sample: 0.9)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD's peak learning rate (torchdistill's sample: 0.1)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum, no Nesterov")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="SGD weight decay, on every parameter")
    p.add_argument("--out", default="benchmarks/results/torchdistill_compare.json", help="summary JSON")
    return p.parse_args(list(argv))


def check_args(args: argparse.Namespace) -> list[str]:
    """The parts to run; a DasError for the first bad value, before anything is loaded."""
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    if not parts or any(s not in PARTS for s in parts):
        raise DasError(f"--parts {args.parts!r} must be a comma list of {', '.join(PARTS)}")
    for flag, value, least in (("--batch", args.batch, 2), ("--threads", args.threads, 0), ("--rounds", args.rounds, 1),
                               ("--steps", args.steps, 1), ("--warmup", args.warmup, 0), ("--epochs", args.epochs, 1),
                               ("--test-images", args.test_images, 0)):
        if value < least:
            raise DasError(f"{flag} {value} must be at least {least}")
    if args.train_images < args.batch:
        raise DasError(f"--train-images {args.train_images} must be at least --batch {args.batch}: every step takes a full batch")
    if not 0 <= args.alpha <= 1 or not args.temperature > 0:
        raise DasError(f"--alpha {args.alpha} must be in [0, 1] and --temperature {args.temperature} above 0")
    if not args.lr > 0 or not 0 <= args.momentum < 1 or args.weight_decay < 0:
        raise DasError(f"--lr {args.lr} must be above 0, --momentum {args.momentum} in [0, 1), --weight-decay {args.weight_decay} at least 0")
    if args.torchdistill_python is None:
        raise DasError(f"--torchdistill-python is needed: the Python of a venv with torchdistill (make one: {VENV})")
    return parts


def das_losses(args: argparse.Namespace) -> dict[str, Any]:
    """torchdistill's KDLoss in das's words: CE alpha + KD (1 - alpha) at the same temperature, nothing else."""
    return {"ce": args.alpha, "kd": {"weight": 1.0 - args.alpha, "temperature": args.temperature}}


# --------------------------------------------------------------------------- torchdistill's side


def subprocess_env(threads: int) -> dict[str, str]:
    """This checkout first on the path (das's networks, benchmarks.torchdistill_side), the threads pinned."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def check_torchdistill(python: str) -> dict[str, str]:
    """torch's and torchdistill's versions in ``python``; a one-line DasError when it cannot run them."""
    if not Path(python).expanduser().is_file():
        raise DasError(f"--torchdistill-python {python} is not a file; give the Python of a venv with torchdistill (make one: {VENV})")
    probe = "import json, torch, torchdistill; print(json.dumps({'torch': torch.__version__, 'torchdistill': torchdistill.__version__}))"
    try:
        done = subprocess.run([str(Path(python).expanduser()), "-c", probe], capture_output=True, text=True, timeout=300,
                              cwd=REPO_ROOT, env=subprocess_env(1))
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DasError(f"--torchdistill-python {python} does not run ({err}); give the Python of a venv with torchdistill") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise DasError(f"--torchdistill-python {python} cannot import torchdistill ({last}); make its venv: {VENV}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class TorchdistillSide:
    """``benchmarks.torchdistill_side`` in the venv's Python, answering one JSON line per request."""

    def __init__(self, python: str, spec: Path, threads: int, log: Path) -> None:
        self.log, self.failed = log, False
        log.parent.mkdir(parents=True, exist_ok=True)
        self._stderr = log.open("w")
        self.proc = subprocess.Popen([str(Path(python).expanduser()), "-m", "benchmarks.torchdistill_side", str(spec)], cwd=REPO_ROOT,
                                     env=subprocess_env(threads), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        try:
            self.ready = self._read("start")
        except BaseException:
            self.close()
            raise

    def _read(self, what: str) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        reply = json.loads(line) if line.strip() else None
        if reply is None or "error" in reply:
            self.failed = True
            self._stderr.flush()
            tail = " | ".join(self.log.read_text().strip().splitlines()[-3:]) if self.log.is_file() else ""
            why = reply["error"] if reply else f"it exited with {self.proc.wait()} ({tail or 'no message'}; see {self.log})"
            raise DasError(f"torchdistill's side failed at {what}: {why}")
        return reply

    def request(self, cmd: str, **fields: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.proc.stdin.flush()
        return self._read(cmd)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        if not self.failed:
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> TorchdistillSide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- the data, drawn once for both sides


def check_files(args: argparse.Namespace) -> None:
    """The teacher's weights and both image files exist, and hold the images asked for; a DasError otherwise."""
    require_file(args.teacher_checkpoint, "--teacher-checkpoint", "the CIFAR-10 ResNet-56 weights (../shared/data/teachers/cifar10_resnet56.th)")
    for flag, path, wanted in (("--train-file", args.train_file, args.train_images), ("--test-file", args.test_file, args.test_images)):
        require_file(path, flag, "CIFAR-10 images as an npz with x (N×32×32×3 uint8) and y (labels), e.g. ../shared/data/cifar10/")
        with np.load(path) as f:
            if "y" not in f.files:
                raise DasError(f"{flag} {path} has no array y (it has {f.files}); give an npz with x (images) and y (labels)")
            available = len(f["y"])
        if wanted > available:
            raise DasError(f"{flag.replace('file', 'images')} {wanted} is more than the {available} images of {path}")


def load_images(args: argparse.Namespace, work: Path) -> DasDataModule:
    """The stratified training and test subsets through das's npz loader (normalisation: the teacher's statistics)."""
    train, test = Path(args.train_file), Path(args.test_file)
    train = subset_file(train, args.train_images, args.seed, work)
    if args.test_images:
        test = subset_file(test, args.test_images, args.seed, work)
    return DasDataModule(dataset="npz", train_file=str(train), test_file=str(test), batch_size=args.batch, val_fraction=0.0)


def draw_schedule(train: ImageSplit, epochs: int, batch: int, seed: int) -> ImageSplit:
    """Every batch of the run in order: per epoch a seeded shuffle (remainder dropped), each image cropped and flipped.

    train.py's CIFAR augmentation (``crop``: 4-pixel padding at 32×32, ``flip``) on the uint8
    images, drawn here once so that both sides train on the same pixels in the same order.
    """
    augment = v2.Compose([AUGMENTATIONS[name](train.image_shape[-1]) for name in ("crop", "flip")])
    order = torch.Generator().manual_seed(seed)
    per_epoch = len(train) // batch * batch
    images, labels = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(epochs):
            picked = torch.randperm(len(train), generator=order)[:per_epoch]
            images.append(torch.stack([augment(train.images[i]) for i in picked.tolist()]))
            labels.append(train.labels[picked])
    return ImageSplit(torch.cat(images), torch.cat(labels))


# --------------------------------------------------------------------------- das's side


def das_module(args: argparse.Namespace, steps_per_epoch: float = 1.0) -> DistillModule:
    """The DistillModule of this comparison: the same KD as torchdistill's, its optimizer, the cosine schedule."""
    torch.manual_seed(args.seed)
    return DistillModule(STUDENT, teacher=TEACHER, teacher_checkpoint=args.teacher_checkpoint, num_classes=CLASSES, losses=das_losses(args),
                         lr=args.lr, momentum=args.momentum, nesterov=False, weight_decay=args.weight_decay, decay_norm_and_bias=True,
                         schedule="cosine")


def das_steps(module: DistillModule, args: argparse.Namespace) -> dict[str, Any]:
    """das's training step and the plain loop's, on one optimizer built as das builds it (no scheduler)."""
    module.train()
    optimizer = build_optimizer(param_groups([module.student, module.projectors], args.weight_decay, True), module.optim)
    device = torch.device("cpu")
    floor = plain_loss(module, ce=args.alpha, kd=1.0 - args.alpha, temperature=args.temperature, cosine=0.0)
    return {"das": training_step(das_loss(module), optimizer, device, "off", None),
            "plain": training_step(floor, optimizer, device, "off", None)}


class StepLosses(L.Callback):
    """Each training step's loss, as the module returned it."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))


def das_accuracy(args: argparse.Namespace, schedule: ImageSplit, test: ImageSplit, mean, std, student_init: Path, work: Path) -> dict[str, Any]:
    """das's run of the schedule through Lightning (make_trainer, training_step), then the student's top-1 on ``test``."""
    module = das_module(args)
    module.student.load_state_dict(torch.load(student_init, weights_only=True))
    normalise = eval_transform(mean, std)
    loader = DataLoader(ImageDataset(schedule, normalise), batch_size=args.batch, shuffle=False, num_workers=0)
    trainer = make_trainer(work / "das_fit", max_epochs=1, accelerator="cpu", progress=False)
    record = StepLosses()
    trainer.callbacks.append(record)
    started = time.perf_counter()
    with warnings.catch_warnings():  # no validation here: "could not find the monitored key" and "few workers" are noise
        warnings.simplefilter("ignore")
        trainer.fit(module, train_dataloaders=loader)
    seconds = time.perf_counter() - started
    test_loader = DataLoader(ImageDataset(test, normalise), batch_size=args.batch)
    return {"test_acc": top1_accuracy(module.student, test_loader, "cpu"), "losses": record.losses, "seconds": seconds,
            "steps": len(record.losses)}


# --------------------------------------------------------------------------- the comparison


def measure_speed(args: argparse.Namespace, steps: dict[str, Any], batch: tuple[torch.Tensor, torch.Tensor],
                  side: TorchdistillSide) -> dict[str, Any]:
    """``--rounds`` rounds of one timed block per side; each round starts one side later, so no side is always first."""
    x, y = batch
    cpu = torch.device("cpu")
    blocks = {"das": lambda: timed(steps["das"], x, y, args.steps, args.warmup, cpu),
              "torchdistill": lambda: side.request("time", steps=args.steps, warmup=args.warmup)["images_per_s"],
              "plain": lambda: timed(steps["plain"], x, y, args.steps, args.warmup, cpu)}
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = [SIDES[(r + i) % len(SIDES)] for i in range(len(SIDES))]
        row = {name: blocks[name]() for name in order}
        rounds.append({**{name: row[name] for name in SIDES}, "order": order})
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {row[k]:.1f}" for k in order) + " images/s", flush=True)
    medians = {k: statistics.median([row[k] for row in rounds]) for k in SIDES}
    vs_td, vs_plain = medians["das"] / medians["torchdistill"], medians["das"] / medians["plain"]
    return {"images_per_s": medians, "das_over_torchdistill": vs_td, "das_over_plain": vs_plain,
            "median_round_das_over_torchdistill": statistics.median([row["das"] / row["torchdistill"] for row in rounds]),
            "median_round_das_over_plain": statistics.median([row["das"] / row["plain"] for row in rounds]),
            "goals": {"das_at_least_torchdistill": vs_td >= 1.0, "das_within_10_percent_of_plain": vs_plain >= 0.9},
            "rounds": rounds, "batch": args.batch, "steps": args.steps, "warmup": args.warmup}


def summary(run: dict[str, Any], epochs: int, batch: int) -> dict[str, Any]:
    """A side's accuracy run without its per-step losses: the first step's and the last epoch's mean instead."""
    losses, per_epoch = run["losses"], max(1, run["steps"] // epochs)
    return {"test_acc": run["test_acc"], "first_loss": losses[0], "last_epoch_mean_loss": statistics.fmean(losses[-per_epoch:]),
            "steps": run["steps"], "seconds": run["seconds"], "images_per_s": run["steps"] * batch / run["seconds"]}


def measure_accuracy(args: argparse.Namespace, side: TorchdistillSide, data: DasDataModule, schedule: ImageSplit,
                     teacher: torch.nn.Module, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Both sides' runs of the schedule (das here, then torchdistill's while this process waits) and the teacher's top-1."""
    test = data.subset("test")
    runs = {"das": das_accuracy(args, schedule, test, data.mean, data.std, Path(spec["student_state"]), work),
            "torchdistill": side.request("train")}
    sides = {name: summary(run, args.epochs, args.batch) for name, run in runs.items()}
    test_loader = DataLoader(ImageDataset(test, eval_transform(data.mean, data.std)), batch_size=args.batch)
    return {**sides, "das_minus_torchdistill_points": sides["das"]["test_acc"] - sides["torchdistill"]["test_acc"],
            "first_loss_abs_difference": abs(sides["das"]["first_loss"] - sides["torchdistill"]["first_loss"]),
            "loss_max_abs_difference": max(abs(a - b) for a, b in zip(runs["das"]["losses"], runs["torchdistill"]["losses"])),
            "teacher_test_acc": top1_accuracy(teacher, test_loader, "cpu"), "train_images": len(data.subset("train")),
            "test_images": len(test), "epochs": args.epochs, "steps": len(schedule) // args.batch,
            "torchdistill_config": runs["torchdistill"]["config"]}


def write_inputs(args: argparse.Namespace, data: DasDataModule, schedule: ImageSplit, module: DistillModule, threads: int,
                 work: Path) -> tuple[dict[str, Any], tuple[torch.Tensor, torch.Tensor]]:
    """What torchdistill's side reads (its spec, the weights, the fixed batch, the schedule) and the fixed batch."""
    spec = {"threads": threads, "teacher": TEACHER, "student": STUDENT, "num_classes": CLASSES, "batch": args.batch,
            "temperature": args.temperature, "alpha": args.alpha,
            "optimizer": {"lr": args.lr, "momentum": args.momentum, "weight_decay": args.weight_decay},
            "teacher_state": str(work / "teacher.pt"), "student_state": str(work / "student_init.pt"),
            "speed_batch": str(work / "speed_batch.pt"), "schedule": str(work / "schedule.pt")}
    torch.save(module.teacher.state_dict(), spec["teacher_state"])
    torch.save(module.student.state_dict(), spec["student_state"])
    normalise = eval_transform(data.mean, data.std)
    batch = (torch.stack([normalise(img) for img in schedule.images[: args.batch]]), schedule.labels[: args.batch].clone())
    torch.save({"x": batch[0], "y": batch[1]}, spec["speed_batch"])
    test = data.subset("test")
    torch.save({"images": schedule.images, "labels": schedule.labels, "test_images": test.images, "test_labels": test.labels,
                "mean": torch.tensor(data.mean), "std": torch.tensor(data.std)}, spec["schedule"])
    (work / "spec.json").write_text(json.dumps(spec, indent=2))
    return spec, batch


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    parts = check_args(args)
    check_files(args)
    probe = check_torchdistill(args.torchdistill_python)
    threads = set_threads(args.threads) if args.threads else torch.get_num_threads()
    out = Path(args.out)
    load_start = load_average()
    result: dict[str, Any] = {"benchmark": "torchdistill_compare", "device": f"CPU ({threads} threads)",
                              "kd": {"das_losses": das_losses(args), "temperature": args.temperature, "ce_weight": args.alpha,
                                     "kd_weight": 1.0 - args.alpha, "cosine_feature_loss": "off"}}
    with tempfile.TemporaryDirectory(prefix="torchdistill_compare.") as tmp:
        work = Path(tmp)
        data = load_images(args, work)
        # speed alone needs only the first batch, which is the same whatever the epochs
        schedule = draw_schedule(data.subset("train"), args.epochs if "accuracy" in parts else 1, args.batch, args.seed)
        module = das_module(args)
        spec, batch = write_inputs(args, data, schedule, module, threads, work)
        with TorchdistillSide(args.torchdistill_python, work / "spec.json", threads, out.with_name(out.stem + ".torchdistill.log")) as side:
            ready = side.ready
            result["kd"]["torchdistill_criterion"] = ready["config"]["criterion"]
            if ready["torch"] != torch.__version__:
                print(f"warning: torch differs: das {torch.__version__}, torchdistill's venv {ready['torch']}; the speeds compare builds too")
            if "speed" in parts:
                s = result["speed"] = measure_speed(args, das_steps(module, args), batch, side)
                print(f"speed (medians of {args.rounds}): " + ", ".join(f"{k} {s['images_per_s'][k]:.1f}" for k in SIDES) + " images/s; "
                      f"das/torchdistill {s['das_over_torchdistill']:.3f}, das/plain {s['das_over_plain']:.3f}", flush=True)
            if "accuracy" in parts:
                a = result["accuracy"] = measure_accuracy(args, side, data, schedule, module.teacher, spec, work)
                print(f"accuracy after {args.epochs} epochs of {a['train_images']} images: das {a['das']['test_acc']:.2f}%, torchdistill "
                      f"{a['torchdistill']['test_acc']:.2f}% on {a['test_images']} test images (teacher {a['teacher_test_acc']:.2f}%); "
                      f"first-step loss das {a['das']['first_loss']:.6f}, torchdistill {a['torchdistill']['first_loss']:.6f}", flush=True)
    result["versions"] = {"torch": torch.__version__, "torchdistill_torch": ready["torch"], "torchdistill": ready["torchdistill"],
                          "same_torch": ready["torch"] == torch.__version__, "torchdistill_python": ready["python"], "probe": probe}
    result["settings"] = {**vars(args), "parts": parts, "threads": threads, "torch": torch.__version__, "date": now_iso(),
                          "machine": machine_info(), "code": code_version(), "load_average": {"start": load_start, "end": load_average()}}
    write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
