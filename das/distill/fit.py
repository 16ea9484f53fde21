"""Train a DistillModule with sensible Trainer defaults, resume it, and save its student's weights.

search.py uses this to train the quickstart teacher once (reused later), and train.py to train
the distilled student and the no-teacher baseline with the same budget.

Where a run writes: everything under one root directory (``run_root``): ``checkpoints/``
(``best.ckpt``, ``last.ckpt``), ``logs/`` (CSV metrics), ``student.pt``, ``results.json``, and from
train.py ``student.onnx`` (das.distill.export).
The checkpoint folder and the logger's folder are derived from that root here, never written in
a YAML, so two runs never share a checkpoint and ``--ckpt_path last`` finds this run's only.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from das.distill.module import DistillModule
from das.errors import DasError
from das.evaluate import top1_accuracy
from das.models import leaderboard_row, pareto_entry

CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"


def checkpoint_callbacks(root_dir: str | Path, monitor: str | None = "val/acc") -> list[Callback]:
    """``best.ckpt`` (best ``monitor``, when there is one) and ``last.ckpt`` (every epoch), overwritten in place.

    Two callbacks, because Lightning's ``save_last=True`` cannot be trusted for resuming: in
    Lightning 2.6 (see ``ModelCheckpoint.on_validation_end`` in 2.6.6) a ModelCheckpoint with a
    monitor refreshes ``last.ckpt`` only at a step where it also saved a top-k file, i.e. when the
    monitored value improved, so with ``save_top_k=1`` ``last.ckpt`` was a copy of ``best.ckpt``
    and a resume restarted from the best epoch, not the last. A monitor-less ModelCheckpoint
    named ``last`` saves after every epoch. ``enable_version_counter=False`` overwrites instead of
    piling up ``last-v1.ckpt``, ``last-v2.ckpt``... when a run directory is reused.
    """
    dirpath = Path(root_dir) / CHECKPOINT_DIR
    last = ModelCheckpoint(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, every_n_epochs=1, enable_version_counter=False)
    if monitor is None:
        return [last]
    best = ModelCheckpoint(dirpath=dirpath, filename="best", monitor=monitor, mode="max", save_top_k=1, enable_version_counter=False)
    return [best, last]


def make_trainer(root_dir: str | Path, max_epochs: int, accelerator: str = "auto", progress: bool = True, **kwargs: Any) -> L.Trainer:
    """A Trainer that keeps ``last.ckpt`` and the best-by-val-accuracy checkpoint under ``root_dir``."""
    root = Path(root_dir)
    return L.Trainer(
        default_root_dir=root,
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=1,
        logger=CSVLogger(root, name=LOG_DIR),
        callbacks=checkpoint_callbacks(root),
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=10,
        **kwargs,
    )


def last_checkpoint(root_dir: str | Path) -> str | None:
    """The checkpoint to resume an interrupted run from, if any (this root's only)."""
    last = Path(root_dir) / CHECKPOINT_DIR / "last.ckpt"
    return str(last) if last.is_file() else None


def resolve_resume(ckpt_path: str | None, root_dir: str | Path) -> str | None:
    """``'last'`` means this run's ``ROOT/checkpoints/last.ckpt``; any other value must be a file."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        found = last_checkpoint(root_dir)
        if found is None:
            raise DasError(
                f"ckpt_path=last: no {Path(root_dir) / CHECKPOINT_DIR / 'last.ckpt'} to resume (a run writes it when its first epoch ends); "
                "run without --ckpt_path to start, or give the run's --trainer.default_root_dir"
            )
        return found
    if not Path(ckpt_path).is_file():
        raise DasError(f"ckpt_path={ckpt_path!r} is not a file; give 'last' (this run's last.ckpt) or a checkpoint path")
    return ckpt_path


def run_root(default_root_dir: str | None, student: str) -> Path:
    """Where a train.py run writes: ``--trainer.default_root_dir`` when given, else next to the searched student.

    A student given as a search result, ``runs/x/best_arch.json`` or a leaderboard row
    ``runs/x/leaderboard.csv#N``, writes to ``runs/x/distill`` (a row: ``runs/x/distill-rankN``; a Pareto entry
    ``runs/x/pareto.json#N``: ``runs/x/distill-paretoN``); any other student (a spec such as
    ``resnet20``, inline JSON) needs an explicit root.
    """
    if student.endswith(".json") and not Path(student).is_file():
        raise DasError(
            f"model.student={student!r} does not exist; give a search's best_arch.json, an inline ArchSpec JSON "
            "or a network spec such as resnet20"
        )
    row = leaderboard_row(student)
    leaderboard = row[0] if row else None
    if leaderboard is not None and not leaderboard.is_file():
        raise DasError(
            f"model.student={student!r}: leaderboard {str(leaderboard)!r} does not exist; "
            "run search.py first or give an existing runs/x/leaderboard.csv#N"
        )
    pareto = pareto_entry(student)
    if pareto is not None and not pareto[0].is_file():
        raise DasError(f"model.student={student!r}: {str(pareto[0])!r} does not exist; run search.py with study.objectives first")
    if default_root_dir is not None:
        return Path(default_root_dir)
    if pareto is not None:  # its own folder per entry, like a leaderboard row
        return pareto[0].parent / f"distill-pareto{pareto[1].strip()}"
    if student.endswith(".json"):
        return Path(student).parent / "distill"
    if leaderboard is not None:  # its own folder, so distilling row 3 never overwrites best_arch.json's run
        return leaderboard.parent / f"distill-rank{(row[1] or '').strip()}"
    raise DasError(
        f"model.student={student!r} is not a search result (best_arch.json or leaderboard.csv#N), so there is no run "
        "directory to write to; give one with --trainer.default_root_dir"
    )


def check_writable(root_dir: str | Path) -> None:
    """Create ``root_dir`` and write a scratch file into it, so an unwritable run dir fails before training."""
    root = Path(root_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-check-"):
            pass
    except OSError as err:
        raise DasError(
            f"run directory {str(root)!r} is not writable ({err.strerror or err}); "
            "give a writable one with --trainer.default_root_dir"
        ) from None


def fit_and_test(module: DistillModule, datamodule: L.LightningDataModule, trainer: L.Trainer, ckpt_path: str | None = None) -> float:
    """Fit (resuming from ``ckpt_path`` if given), then return test accuracy in % over the whole test split.

    Ctrl-C raises KeyboardInterrupt here (Lightning turns it into ``sys.exit(1)``, which would
    hide it); ``last.ckpt`` of the last finished epoch is kept. Under DDP (``world_size`` > 1)
    ``trainer.test`` would shard the test split and pad the shards (a DistributedSampler), so
    every rank instead tests the whole split with the student's weights, which DDP keeps equal on
    all ranks: the same figure as one process gives, and no collective call that a rank could miss.
    """
    runs = [lambda: trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)]
    if trainer.world_size == 1:
        runs.append(lambda: trainer.test(module, datamodule=datamodule, verbose=False))
    for run in runs:
        try:
            results = run()
        except SystemExit:
            if trainer.interrupted:
                raise KeyboardInterrupt from None
            raise
    if trainer.world_size > 1:
        datamodule.setup("test")
        return top1_accuracy(module, datamodule.test_dataloader(), trainer.strategy.root_device)
    return 100.0 * float(results[0]["test/acc"])


def tested_batches(trainer: L.Trainer, datamodule: L.LightningDataModule) -> int:
    """The test batches a student was tested on by :func:`fit_and_test`: all of them under DDP, else what trainer.test read."""
    if trainer.world_size > 1:
        return len(datamodule.test_dataloader())
    batches = trainer.num_test_batches
    return int(batches[0] if isinstance(batches, list) else batches)


def export_student(module: DistillModule, path: str | Path, **info: Any) -> Path:
    """Save the trained network alone (no teacher, no projector), with what rebuilds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hp = module.hparams
    torch.save({"state_dict": module.student.state_dict(), "student": hp.student, "student_spec": hp.student_spec}, path)
    path.with_suffix(".json").write_text(json.dumps({"student": hp.student, "student_spec": hp.student_spec, **info}, indent=2) + "\n")
    return path
