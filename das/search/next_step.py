"""The train.py command that distils a finished search's best student: what search.py prints as its ``next:`` hint.

The command must run as printed: it names the search's student, teacher and checkpoint, and
either the distillation config that matches the search's config (``configs/distill/NAME.yaml``
for ``configs/search/NAME.yaml``) or, without one, every data setting that differs from the
code's defaults, the input size and an epoch budget (train.py starts from the code's defaults
once a command names its teacher).
"""

from __future__ import annotations

import inspect
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from das.data import DasDataModule

#: The epochs of the hint's distillation when no matching config gives them (the quickstart's).
DEFAULT_EPOCHS = 15
#: DistillModule's default ``input_size``: the hint names another only when the data differ.
DEFAULT_INPUT_SIZE = (3, 32, 32)


def train_command(run_dir: str | Path, teacher: str, checkpoint: str, data: Mapping[str, Any], configs: Sequence[str],
                  input_shape: Sequence[int] | None = None) -> str:
    """``python train.py ...`` for ``RUN_DIR/best_arch.json`` distilled from ``teacher`` on the search's data.

    Args:
        run_dir: the search's run directory.
        teacher, checkpoint: the teacher spec and the weights the search used.
        data: the search's data settings (``DasDataModule.hparams``).
        configs: the search's ``--config`` files, in order; the last one's matching distill config is used when it exists.
        input_shape: (C, H, W) of the search's images, when known (else from ``data.image_size``, 3 channels).
    """
    student = f"{Path(run_dir)}/best_arch.json"
    models = ["--model.student", student, "--model.teacher", teacher, "--model.teacher_checkpoint", checkpoint]
    matching = distill_config(configs[-1]) if configs else None
    if matching is not None:
        return _join(["python", "train.py", "--config", matching, *models])
    flags = [*models, *_data_flags(data)]
    shape = tuple(input_shape) if input_shape else ((3, data["image_size"], data["image_size"]) if data.get("image_size") else None)
    if shape is not None and shape != DEFAULT_INPUT_SIZE:
        flags += ["--model.input_size", _value(list(shape))]
    flags += ["--trainer.max_epochs", str(DEFAULT_EPOCHS)]
    return _join(["python", "train.py", *flags])


def distill_config(search_config: str | Path) -> str | None:
    """``configs/distill/NAME.yaml`` beside ``configs/search/NAME.yaml`` (or ``configs/NAME.yaml``), when it exists."""
    path = Path(search_config)
    root = path.parent.parent if path.parent.name == "search" else path.parent
    candidate = root / "distill" / path.name
    if not candidate.is_file():
        return None
    try:
        return str(candidate.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(candidate)


def _data_flags(data: Mapping[str, Any]) -> list[str]:
    """``--data.KEY VALUE`` for every data setting that differs from DasDataModule's default, in its signature's order."""
    flags = []
    for name, param in inspect.signature(DasDataModule.__init__).parameters.items():
        if name == "self" or name not in data:
            continue
        value = data[name]
        if isinstance(value, tuple):
            value = list(value)
        if value != param.default:
            flags += [f"--data.{name}", _value(value)]
    return flags


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return "null" if value is None else str(value)


def _join(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)
