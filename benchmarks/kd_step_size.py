"""Why KD first lost to training alone: adding the KD term doubles the step size.

A plain PyTorch loop (no Lightning), ResNet-20 from scratch on the CIFAR-10 pilot subset, batch
128, SGD with Nesterov momentum 0.9, weight decay 5e-4, constant learning rate. It prints the
training accuracy over the last 20 steps every 20 steps, for

- ``ce``: cross-entropy alone;
- ``kdT``: CE + KD at temperature T against the ResNet-56 teacher (weights 1 and 1, the old
  default of train.py).

If CE + KD at learning rate η trains like CE alone at 2η, and CE + KD at η/2 like CE at η, the
loss is not wrong: its summed weights double the gradient, and the early steps are too large.
docs/results.md ("Distillation on CIFAR-10") gives the figures of one run of each.

    python -m benchmarks.kd_step_size ce --lr 0.1
    python -m benchmarks.kd_step_size ce --lr 0.2
    python -m benchmarks.kd_step_size kd1 --lr 0.1
    python -m benchmarks.kd_step_size kd1 --lr 0.05
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from das.data.datamodule import DasDataModule
from das.distill.losses import kd_loss
from das.models import build_model
from das.paths import shared_data_dir


def main() -> None:
    data_dir = shared_data_dir()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", help="ce, or kdT for CE + KD at temperature T (e.g. kd1, kd4)")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--train-file", default="benchmarks/results/cifar10_distill_pilot.json.work/data/train_jpeg_5500_seed0.npz",
                   help="the pilot's stratified 5,500-image subset (benchmarks/cifar10_distill.py writes it)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = DasDataModule(dataset="npz", train_file=args.train_file, test_file=str(data_dir / "cifar10" / "test_jpeg.npz"),
                         batch_size=128, val_fraction=500 / 5500, seed=0)
    data.setup("fit")
    torch.manual_seed(0)
    student = build_model("resnet20", 10).train()
    teacher = None
    if args.mode != "ce":
        teacher = build_model("resnet56", 10, checkpoint=str(data_dir / "teachers" / "cifar10_resnet56.th")).eval()
    temperature = float(args.mode[2:]) if teacher is not None else 0.0
    opt = torch.optim.SGD(student.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    step, hits = 0, []
    while step < args.steps:
        for x, y in data.train_dataloader():
            logits = student(x)
            loss = F.cross_entropy(logits, y)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(x)
                loss = loss + kd_loss(logits, t_logits, temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            hits.append((logits.argmax(1) == y).float().mean().item())
            step += 1
            if step % 20 == 0:
                print(f"{args.mode} lr {args.lr:g} step {step}: train acc (last 20 steps) {sum(hits[-20:]) / 20:.3f}, loss {loss.item():.3f}", flush=True)
            if step >= args.steps:
                break


if __name__ == "__main__":
    main()
