"""prune.py's at-init mode: mask the initialised student, train it with the masks fixed, export it.

The student is scored on probe batches of training images (px, snip) or data-free (synflow,
magnitude, random), masked by :func:`das.prune.prune_at_init`, and trained like train.py's
student (distilled from ``model.teacher`` when one is given, else alone) with the masks applied as
parametrizations, so pruned weights stay exactly zero through every optimiser step.

Checkpoints: Lightning's ``last.ckpt``/``best.ckpt`` keep the masks (``DistillModule`` puts them
back on loading, so ``--ckpt_path last`` and ``load_from_checkpoint`` give the same masked
student). The exported ``student.pt`` has them baked in (:func:`das.prune.remove_masks`): plain
``<layer>.weight`` keys, zeros where pruned, so it loads like any train.py student and its outputs
are the masked network's exactly; ``masks.pt`` keeps the masks for training on sparsely.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

from das.data import probe_batches
from das.distill.command import DasCLI, teacher_accuracy
from das.distill.module import DistillModule
from das.prune.at_init import prune_at_init
from das.prune.config import PruneConfig
from das.nets.masks import apply_masks, remove_masks
from das.prune.registry import SALIENCIES
from das.prune.runfiles import RunFiles
from das.prune.sizes import density_section, masked_size
from das.prune.steps import export, test_accuracy, train_recorded
from das.nets.checkpoint import load_checkpoint


def run_at_init(cli: DasCLI, cfg: PruneConfig, files: RunFiles, settings: dict[str, Any], resuming: bool) -> dict[str, Any]:
    """Prune ``cli.model``'s student at initialisation, train it, export it; the results (also in prune_results.json)."""
    module, data, trainer = cli.model, cli.datamodule, cli.trainer
    results = files.read(settings) if resuming else None
    if results is not None and files.masks.is_file():
        if cli.resume is None and cfg.checkpoint:  # no epoch had finished: start again from the same weights
            load_checkpoint(module.student, cfg.checkpoint)
        mask_student(module, torch.load(files.masks, map_location="cpu", weights_only=True))
        print(f"resuming: masks from {files.masks}, training from {cli.resume or 'the start'}")
    else:
        results = prune_student(module, data, trainer, cfg, files, settings)
    # Seeded here, so a run resumed before its first epoch ended draws what the uninterrupted one drew
    # (PX and SNIP may draw from the global generator; a resumed fit restores the checkpoint's).
    L.seed_everything(cli.config.seed_everything, verbose=False)
    after = train_recorded(module, data, trainer, results, cli.resume)
    if module.teacher is not None:
        results["test_acc"]["teacher"] = teacher_accuracy(module, data, trainer)
    density = density_section(module.student)  # from the masks still applied: what was trained
    remove_masks(module.student)  # baked: student.pt has plain weights, zeros where pruned
    written = export(module, files.student, data, test_acc=after, masks=str(files.masks), density=density["overall"]["density"])
    results["paths"].update(student=str(files.student), onnx=str(written[1]) if len(written) > 1 else None)
    results.update(density=density, complete=True)
    files.write(results)
    return results


def prune_student(module: DistillModule, data: Any, trainer: Any, cfg: PruneConfig, files: RunFiles, settings: dict[str, Any]) -> dict[str, Any]:
    """Choose and apply the masks; write masks.pt and the first prune_results.json."""
    student = module.student
    if cfg.checkpoint:
        load_checkpoint(student, cfg.checkpoint)
    input_size = tuple(data.input_shape)
    saliency = SALIENCIES.get(cfg.method)
    batches = probe_batches(data, cfg.probe_batch_size, cfg.probe_batches, cfg.seed) if saliency.needs_data else None
    home = next(student.parameters()).device
    started = time.perf_counter()
    student.to(trainer.strategy.root_device)  # PX's 100 rounds run on the GPU when there is one
    try:
        masks = prune_at_init(student, cfg.method, cfg.density, batches, rounds=cfg.rounds, scope=cfg.scope,
                              seed=cfg.seed, input_shape=input_size, progress=True)
    finally:
        student.to(home)
    seconds = time.perf_counter() - started
    masks = {name: mask.cpu() for name, mask in masks.items()}
    mask_student(module, masks)
    torch.save(masks, files.masks)
    dense, pruned = masked_size(student, masks, input_size)
    density = density_section(student)
    results = {
        "mode": "at_init", "method": cfg.method, "complete": False, "settings": settings,
        "density": density, "sparsity": density["overall"]["sparsity"],
        "rounds": cfg.rounds or saliency.rounds, "prune_seconds": round(seconds, 2),
        "probe_images": 0 if batches is None else sum(len(x) for x, _ in batches),
        "params": _before_after(dense.params, pruned.params), "flops": _before_after(dense.flops, pruned.flops),
        "flops_note": "after: multiply-adds with a non-zero weight only (a sparse kernel's work); a dense kernel runs them all",
        "test_acc": {"before_training": test_accuracy(student, data, trainer)},
        "paths": {"run_dir": str(files.root), "masks": str(files.masks), "results": str(files.results),
                  "checkpoints": str(files.checkpoints)},
    }
    files.write(results)
    return results


def mask_student(module: DistillModule, masks: dict[str, torch.Tensor]) -> None:
    """Apply ``masks`` to ``module``'s student, fixed for the rest of training, in the student's memory layout."""
    apply_masks(module.student, masks)
    if module.hparams.channels_last:  # the mask buffers in the layout of the weights they multiply
        module.student.to(memory_format=torch.channels_last)


def _before_after(before: int, after: int) -> dict[str, Any]:
    return {"before": before, "after": after, "ratio": after / before if before else None}

