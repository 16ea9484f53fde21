"""Get the search's teacher: checked first, then from a given checkpoint or trained once and reused."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning as L
import torch
from torch import nn

from das.distill.fit import export_student, fit_and_test, last_checkpoint, make_trainer
from das.distill.module import DistillModule, NonFiniteLoss
from das.errors import DasError
from das.inputs import check_runs_on
from das.search.config import TeacherConfig, check_teacher_recipe
from das.search.locks import exclusive
from teachers import create_teacher


def check_teacher(cfg: TeacherConfig, num_classes: int, sample: torch.Tensor) -> nn.Module | None:
    """Fail in one line, before any training, on a teacher that cannot be used.

    Builds the teacher (an unknown spec fails here), loads ``cfg.checkpoint`` strictly when one
    is given, and runs it on ``sample`` (a few probe images) so images too small for it fail now
    rather than after an hour. Returns the loaded teacher when there is a checkpoint.
    """
    check_teacher_recipe(cfg)
    teacher = create_teacher(cfg.spec, checkpoint=cfg.checkpoint, num_classes=num_classes)
    teacher.eval()
    out = check_runs_on(teacher, f"teacher {cfg.spec!r}", sample.cpu())
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != num_classes:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DasError(f"teacher {cfg.spec!r} returns {got} for a batch; it must return logits of shape (batch, {num_classes})")
    return teacher if cfg.checkpoint is not None else None


def prepare_teacher(cfg: TeacherConfig, datamodule: L.LightningDataModule, num_classes: int,
                    input_size: tuple[int, int, int], run_dir: Path, log=print, seed: int = 0,
                    loaded: nn.Module | None = None) -> tuple[nn.Module, str]:
    """Return the teacher (eval mode, frozen) and the checkpoint path it was loaded from.

    Without ``cfg.checkpoint`` the teacher is trained with the same Lightning code that distils
    students, saved as ``RUN_DIR/teacher/teacher.pt`` and reused by every later run; an
    interrupted training resumes from its ``last.ckpt``. The training is seeded (``seed``: its
    initialisation, data order and augmentation), so a fresh run directory gets the same teacher,
    and with it the same DisWOT ranking, as the last one. Processes sharing a run directory train
    it once: the others wait for it. ``loaded`` is the teacher :func:`check_teacher` already loaded.
    """
    checkpoint = cfg.checkpoint
    if checkpoint is None:
        root = run_dir / "teacher"
        path = root / "teacher.pt"
        with exclusive(root / ".training.lock"):
            if path.is_file():
                log(f"teacher: reusing {cfg.spec} trained earlier, {path}")
            else:
                _train(cfg, datamodule, num_classes, input_size, root, path, log, seed)
        checkpoint = str(path)
    teacher = loaded if loaded is not None else create_teacher(cfg.spec, checkpoint=checkpoint, num_classes=num_classes)
    return teacher.requires_grad_(False).eval(), checkpoint


def _train(cfg, datamodule, num_classes, input_size, root: Path, path: Path, log, seed: int) -> None:
    log(f"teacher: no checkpoint given, training {cfg.spec} once for {cfg.epochs} epochs "
        f"(saved to {path} and reused next time)")
    L.seed_everything(seed, workers=True, verbose=False)
    # Cross-entropy alone, whatever the distillation defaults are: this network is the teacher.
    module = DistillModule(student=cfg.spec, num_classes=num_classes, lr=cfg.lr, input_size=input_size, losses={"ce": 1.0})
    trainer = make_trainer(root, cfg.epochs, progress=False)  # the search's own lines say what happens
    try:
        acc = fit_and_test(module, datamodule, trainer, ckpt_path=last_checkpoint(root))
    except NonFiniteLoss as err:
        raise DasError(diverged_teacher(cfg, err)) from None
    except SystemExit:
        # Lightning turns Ctrl-C into sys.exit(1) and ignores SIGINT from then on; give the
        # search its interrupt back so it exits 130 like any other Ctrl-C.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    export_student(module, path, test_acc=acc)
    log(f"teacher: {cfg.spec} trained")


def diverged_teacher(cfg: TeacherConfig, err: Exception) -> str:
    """The teacher training's non-finite loss in search.py's words (teacher.lr), not train.py's (model.lr)."""
    where = str(err).split(" with model.lr=")[0]
    return f"{where} while training the teacher with teacher.lr={cfg.lr:g}; lower --teacher.lr (the quickstart uses 0.1)"
