"""Get the search's teacher: from a given checkpoint, or trained once and reused."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch import nn

from das.distill.fit import export_student, fit_and_test, last_checkpoint, make_trainer
from das.distill.module import DistillModule
from das.search.config import TeacherConfig
from teachers import create_teacher


def prepare_teacher(cfg: TeacherConfig, datamodule: L.LightningDataModule, num_classes: int,
                    input_size: tuple[int, int, int], run_dir: Path, log=print, seed: int = 0) -> tuple[nn.Module, str]:
    """Return the teacher (eval mode, frozen) and the checkpoint path it was loaded from.

    Without ``cfg.checkpoint`` the teacher is trained with the same Lightning code that distils
    students, saved as ``RUN_DIR/teacher/teacher.pt`` and reused by every later run; an
    interrupted training resumes from its ``last.ckpt``. The training is seeded (``seed``: its
    initialisation, data order and augmentation), so a fresh run directory gets the same teacher,
    and with it the same DisWOT ranking, as the last one.
    """
    checkpoint = cfg.checkpoint
    if checkpoint is None:
        root = run_dir / "teacher"
        path = root / "teacher.pt"
        if path.is_file():
            log(f"teacher: reusing {cfg.spec} trained earlier, {path}")
        else:
            log(f"teacher: no checkpoint given, training {cfg.spec} once for {cfg.epochs} epochs "
                f"(saved to {path} and reused next time)")
            L.seed_everything(seed, workers=True, verbose=False)
            module = DistillModule(student=cfg.spec, num_classes=num_classes, lr=cfg.lr, input_size=input_size)
            trainer = make_trainer(root, cfg.epochs)
            acc = fit_and_test(module, datamodule, trainer, ckpt_path=last_checkpoint(root))
            export_student(module, path, test_acc=acc)
            log(f"teacher: {cfg.spec} test accuracy {acc:.2f}%")
        checkpoint = str(path)
    teacher = create_teacher(cfg.spec, checkpoint=checkpoint, num_classes=num_classes)
    return teacher.requires_grad_(False).eval(), checkpoint
