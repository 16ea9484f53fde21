"""Steps both modes of prune.py share: accuracy on the Trainer's test batches, a module built from the
configured one with some arguments changed, the recorded training, and the export of the trained student."""

from __future__ import annotations

import inspect
import time
from itertools import islice
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from das.data import DasDataModule
from das.distill.command import save_student
from das.distill.fit import tested_batches
from das.distill.fit import fit_and_test
from das.distill.module import DistillModule
from das.evaluate import top1_accuracy


def test_batch_count(trainer: L.Trainer, data: DasDataModule) -> int:
    """How many test batches ``trainer.test`` will read (``limit_test_batches`` as Lightning reads it)."""
    total = len(data.test_dataloader())
    limit = trainer.limit_test_batches
    if limit is None:
        return total
    if isinstance(limit, int) and not isinstance(limit, bool):
        return min(total, limit)
    return total if limit >= 1.0 else max(1, int(total * limit))


def test_accuracy(net: nn.Module, data: DasDataModule, trainer: L.Trainer) -> float:
    """Top-1 % of ``net`` on the test batches the trained student is tested on, on the Trainer's device.

    So that "before training" and "after training" are measured on the same images.
    """
    device = trainer.strategy.root_device
    param = next(net.parameters(), None)
    home = param.device if param is not None else torch.device("cpu")
    net.to(device)
    try:
        return top1_accuracy(net, islice(data.test_dataloader(), test_batch_count(trainer, data)), device)
    finally:
        net.to(home)


def derived_module(module: DistillModule, **changes: Any) -> DistillModule:
    """A new DistillModule with ``module``'s arguments, ``changes`` applied (as train.py builds its baseline)."""
    accepted = inspect.signature(DistillModule.__init__).parameters  # LightningCLI adds private keys to hparams
    args = {k: v for k, v in module.hparams.items() if k in accepted}
    return DistillModule(**{**args, **changes})


def train_recorded(module: DistillModule, data: DasDataModule, trainer: L.Trainer, results: dict[str, Any], ckpt_path: str | None) -> float:
    """Fit and test; record the accuracy after training, the test images, epochs and seconds in ``results``."""
    started = time.perf_counter()
    after = fit_and_test(module, data, trainer, ckpt_path=ckpt_path)
    results["test_acc"]["after_training"] = after
    results["test_images"] = min(data.split_size("test"), tested_batches(trainer, data) * data.hparams.batch_size)
    results["epochs"] = trainer.max_epochs
    results["train_seconds"] = round(time.perf_counter() - started, 1)
    return after


def export(module: DistillModule, path: Path, data: DasDataModule, **info: Any) -> list[Path]:
    """``student.pt``/``.json``/``.onnx`` as train.py writes them (the ONNX file checked against the eager student)."""
    example = torch.randn(2, *data.input_shape, generator=torch.Generator().manual_seed(0))
    return save_student(module, path, example, **info)
