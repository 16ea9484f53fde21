"""prune.py's slim mode: sparse training, channel slimming by BatchNorm γ, then distillation from the unpruned network.

Liu et al., "Learning Efficient Convolutional Networks through Network Slimming" (ICCV 2017),
with das's last step: the slimmed network is distilled from the unpruned one it was cut from,
which is at hand and knows the data better than the labels alone (``prune.distill false``
fine-tunes it alone instead, as in the paper).

1. The unpruned network is ``model.student`` with ``prune.checkpoint``'s weights; with
   ``prune.sparse_epochs`` > 0 it is first trained for that many epochs on the configured losses
   plus ``bn_l1`` (λ ``prune.bn_l1``), alone, which drives unneeded γ towards 0 (``sparse/``).
2. :func:`das.prune.slim.slim` removes the channels ``prune.ratio``/``threshold`` select and
   ``pruned.pt`` stores the smaller network (spec + weights, a student spec of its own).
3. ``pruned.pt`` trains for ``trainer.max_epochs`` under the configured losses: distilled from the
   unpruned network (teacher = the same spec with the unpruned weights), or alone.
"""

from __future__ import annotations

import json
import time
from typing import Any

import lightning as L

from das.distill.command import DasCLI
from das.distill.fit import export_student, fit_and_test
from das.distill.module import DistillModule
from das.models import build_model
from das.prune.config import PruneConfig
from das.prune.runfiles import RunFiles
from das.prune.slim import save_pruned, slim
from das.prune.steps import derived_module, export, test_accuracy, train_recorded
from das.spec import ArchSpec
from das.nets.checkpoint import load_checkpoint


def base_spec(module: DistillModule) -> str:
    """The spec that builds ``module``'s student: its ArchSpec as inline JSON (no file needed later), else the string given."""
    spec = module.hparams.student_spec
    return ArchSpec.from_dict(spec).to_json() if spec else str(module.hparams.student)


def run_slim(cli: DasCLI, cfg: PruneConfig, files: RunFiles, settings: dict[str, Any], resuming: bool) -> dict[str, Any]:
    """Sparse-train (optional), slim and fine-tune ``cli.model``'s student; the results (also in prune_results.json)."""
    data, trainer = cli.datamodule, cli.trainer
    spec = base_spec(cli.model)
    results = files.read(settings) if resuming else None
    if results is None or not files.pruned.is_file():
        unpruned_file, sparse = sparse_train(cli, cfg, files, resuming)
        results = slim_unpruned(cli, cfg, files, settings, spec, unpruned_file, sparse)
    else:
        print(f"resuming: the slimmed network from {files.pruned}, training from {cli.resume or 'the start'}")
    unpruned_file = results["paths"]["unpruned_weights"]
    L.seed_everything(cli.config.seed_everything, verbose=False)  # each training starts from the seed, resumed or not
    module = derived_module(
        cli.model, student=str(files.pruned), student_spec=None,
        teacher=spec if cfg.distills else None, teacher_checkpoint=unpruned_file if cfg.distills else None,
    )
    after = train_recorded(module, data, trainer, results, cli.resume)
    written = export(module, files.student, data, test_acc=after, pruned=str(files.pruned))
    results["paths"].update(student=str(files.student), onnx=str(written[1]) if len(written) > 1 else None)
    results["complete"] = True
    files.write(results)
    return results


def sparse_train(cli: DasCLI, cfg: PruneConfig, files: RunFiles, resuming: bool) -> tuple[str, dict[str, Any] | None]:
    """The unpruned network's weights file, after ``prune.sparse_epochs`` of sparse training when asked for.

    Returns the weights file and, when this run trained it, what the sparse training was.
    """
    if not cfg.sparse_epochs:
        assert cfg.checkpoint is not None  # PruneConfig refuses slim with neither
        return cfg.checkpoint, None
    done = files.sparse_student
    info = {"epochs": cfg.sparse_epochs, "bn_l1": cfg.sparse_lambda, "from": cfg.checkpoint, "run_dir": str(files.sparse_root)}
    if resuming and done.is_file():
        saved = json.loads(done.with_suffix(".json").read_text())
        return str(done), {**info, "test_acc": saved["test_acc"]}
    losses = {**dict(cli.model.hparams.losses), "bn_l1": cfg.sparse_lambda}
    L.seed_everything(cli.config.seed_everything, verbose=False)
    module = derived_module(cli.model, losses=losses)
    ckpt = files.last(files.sparse_root) if resuming else None
    if ckpt is None and cfg.checkpoint:
        load_checkpoint(module.student, cfg.checkpoint)
    print(f"sparse training: {cfg.sparse_epochs} epochs with bn_l1 {cfg.sparse_lambda:g} under {files.sparse_root}"
          + (f", resuming from {ckpt}" if ckpt else ""))
    trainer = cli.instantiate_trainer(root=files.sparse_root, resuming=ckpt is not None, max_epochs=cfg.sparse_epochs)
    acc = fit_and_test(module, cli.datamodule, trainer, ckpt_path=ckpt)
    export_student(module, done, test_acc=acc, bn_l1=cfg.sparse_lambda, epochs=cfg.sparse_epochs)
    return str(done), {**info, "test_acc": acc}


def slim_unpruned(cli: DasCLI, cfg: PruneConfig, files: RunFiles, settings: dict[str, Any], spec: str,
                  unpruned_file: str, sparse: dict[str, Any] | None) -> dict[str, Any]:
    """Slim the unpruned network, write pruned.pt and the first prune_results.json."""
    data, trainer = cli.datamodule, cli.trainer
    input_size = tuple(data.input_shape)
    unpruned = build_model(spec, data.num_classes, checkpoint=unpruned_file)
    started = time.perf_counter()
    slimmed = slim(unpruned, cfg.slim_config(), input_size)
    seconds = time.perf_counter() - started
    save_pruned(files.pruned, slimmed.model, slimmed.spec(spec, data.num_classes))
    report = slimmed.report()
    results = {
        "mode": "slim", "method": "slim", "complete": False, "settings": settings,
        "slim": {"config": report["config"], "bn_channels": report["bn_channels"], "layers": report["layers"], "seconds": round(seconds, 2)},
        "sparsity": report["bn_channels"]["removed_fraction"],
        "params": report["params"], "flops": report["flops"],
        "sparse_training": sparse,
        "test_acc": {
            "unpruned": sparse["test_acc"] if sparse else test_accuracy(unpruned, data, trainer),
            "before_training": test_accuracy(slimmed.model, data, trainer),
        },
        "teacher": {"spec": spec, "checkpoint": unpruned_file} if cfg.distills else None,
        "paths": {"run_dir": str(files.root), "unpruned_weights": unpruned_file, "pruned": str(files.pruned),
                  "results": str(files.results), "checkpoints": str(files.checkpoints)},
    }
    files.write(results)
    return results
