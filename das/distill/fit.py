"""Train a DistillModule with sensible Trainer defaults and save its student's weights.

search.py uses this to train the quickstart teacher once (reused later), and train.py to train
the no-teacher baseline with the same budget as the distilled student.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from das.distill.module import DistillModule


def make_trainer(root_dir: str | Path, max_epochs: int, accelerator: str = "auto", progress: bool = True, **kwargs: Any) -> L.Trainer:
    """A Trainer that keeps ``last.ckpt`` and the best-by-val-accuracy checkpoint under ``root_dir``."""
    root = Path(root_dir)
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", monitor="val/acc", mode="max", save_last=True, filename="best")
    return L.Trainer(
        default_root_dir=root,
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=1,
        logger=CSVLogger(root, name="logs"),
        callbacks=[checkpoint],
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=10,
        **kwargs,
    )


def last_checkpoint(root_dir: str | Path) -> str | None:
    """The checkpoint to resume an interrupted run from, if any."""
    last = Path(root_dir) / "checkpoints" / "last.ckpt"
    return str(last) if last.is_file() else None


def fit_and_test(module: DistillModule, datamodule: L.LightningDataModule, trainer: L.Trainer, ckpt_path: str | None = None) -> float:
    """Fit (resuming from ``ckpt_path`` if given), then return test accuracy in %."""
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    results = trainer.test(module, datamodule=datamodule, verbose=False)
    return 100.0 * float(results[0]["test/acc"])


def export_student(module: DistillModule, path: str | Path, **info: Any) -> Path:
    """Save the trained network alone (no teacher, no projector), with what rebuilds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hp = module.hparams
    torch.save({"state_dict": module.student.state_dict(), "student": hp.student, "student_spec": hp.student_spec}, path)
    path.with_suffix(".json").write_text(json.dumps({"student": hp.student, "student_spec": hp.student_spec, **info}, indent=2) + "\n")
    return path
