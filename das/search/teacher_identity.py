"""The search's teacher across runs and machines: the file a study's trials were scored with, and its test accuracy.

A study on a shared storage (PostgreSQL, a journal file elsewhere) may be joined by processes
on other machines; their scores compare only when every one uses the same teacher file, so
its sha256 is kept in the study. The teacher's test accuracy is measured once per teacher file
and test split and kept in the study too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import optuna
import torch

from das.data import DasDataModule
from das.errors import DasError
from das.evaluate import top1_accuracy
from das.search.config import TeacherConfig


#: Study user attr: the sha256 of the teacher file the study's trials were scored with (shared storages).
TEACHER_FILE_ATTR = "teacher_file"


def file_digest(path: str | Path) -> str | None:
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_teacher_here(optuna_study: optuna.Study, cfg: TeacherConfig, run_dir: Path) -> None:
    """On a shared study, refuse before any training to train a second teacher: the first one's scores would not compare.

    A machine joining a study another machine started has no ``teacher/teacher.pt`` of its own;
    training one here (other hardware, other float rounding) would give other weights.
    """
    stored = optuna_study.user_attrs.get(TEACHER_FILE_ATTR)
    here = run_dir / "teacher" / "teacher.pt"
    if stored and cfg.checkpoint is None and not here.is_file():
        raise DasError(
            f"study {optuna_study.study_name!r} was scored with a teacher trained elsewhere ({stored.get('path')}, "
            f"sha256 {str(stored.get('sha256'))[:12]}); copy that file to {here} or give --teacher.checkpoint, "
            "rather than train another teacher here"
        )


def check_same_teacher(optuna_study: optuna.Study, checkpoint: str, run_dir: Path) -> None:
    """On a shared study, the teacher file must be the one its trials were scored with (its sha256 is kept in the study)."""
    digest = file_digest(checkpoint)
    if digest is None:
        return
    stored = optuna_study.user_attrs.get(TEACHER_FILE_ATTR)
    if not stored:
        optuna_study.set_user_attr(TEACHER_FILE_ATTR, {"sha256": digest, "path": str(Path(checkpoint).resolve())})
    elif stored.get("sha256") != digest:
        raise DasError(
            f"teacher file {checkpoint} (sha256 {digest[:12]}) is not the one study {optuna_study.study_name!r} was scored with "
            f"({stored.get('path')}, sha256 {str(stored.get('sha256'))[:12]}); copy that file here or use a new study.study_name"
        )


def teacher_accuracy(optuna_study: optuna.Study, cfg: TeacherConfig, model: torch.nn.Module, checkpoint: str,
                      data: DasDataModule, device: torch.device, log) -> float:
    """Top-1 accuracy (%) on the data module's test split, the split train.py tests students on.

    Measured once per teacher file and test split and kept in the study, so a resume does not
    pay for it again.
    """
    path = Path(checkpoint)
    teacher_file = f"{path.resolve()}|{path.stat().st_size}|{path.stat().st_mtime_ns}" if path.is_file() else checkpoint
    test_split = {k: data.hparams.get(k) for k in ("dataset", "root", "test_file", "image_size", "mean", "std")}
    if data.hparams.get("transform", "auto") != "auto":  # stored only when set, so older studies keep their key
        test_split["transform"] = data.hparams["transform"]
    key = json.dumps([teacher_file, test_split], sort_keys=True)
    cached = optuna_study.user_attrs.get("teacher_test_acc")
    if isinstance(cached, dict) and cached.get("teacher") == key:
        acc = cached["acc"]
    else:
        acc = top1_accuracy(model, data.test_dataloader(), device)
        optuna_study.set_user_attr("teacher_test_acc", {"teacher": key, "acc": acc})
    log(f"teacher: {cfg.spec} {acc:.2f}% top-1 on the {data.split_size('test')} held-out test images (the split train.py tests students on)")
    return acc
