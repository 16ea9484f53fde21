"""The Lightning module that distils a teacher into a student (or trains a network alone).

The teacher is frozen: ``requires_grad_(False)``, kept in ``eval()`` so its BatchNorm statistics
never move, called under ``torch.no_grad()``, left out of the optimizer, and left out of the
saved checkpoint (it is rebuilt from its spec and checkpoint path, which are hyperparameters).
With no teacher, the same module trains its network from scratch with cross-entropy: that is
how das trains the quickstart's teacher and the no-teacher baseline.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from das.distill.losses import cosine_feature_loss, kd_loss, projector
from das.distill.rng import rng_states, set_rng_states
from das.errors import DasError
from das.features import FeaturePoint, FeatureTap, feature_points, final_point
from das.models import build_model
from das.spec import ArchSpec


# The frozen teacher is in eval mode on purpose; Lightning's warning about it is noise here.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


class NonFiniteLoss(DasError, FloatingPointError):
    """The training loss became NaN or infinite: a user-fixable setting (usually the learning rate)."""


class DistillModule(L.LightningModule):
    """Distil ``teacher`` into ``student`` with CE + KD + a cosine feature loss.

    Args:
        student: the network to train: a path to an architecture JSON (e.g. a search's
            ``best_arch.json``), an inline ArchSpec JSON, or a teacher spec such as ``resnet20``.
        teacher: a teacher spec (``resnet20``, ``timm:NAME``, ``module:function``); None trains
            the student alone with cross-entropy.
        teacher_checkpoint: local weights for the teacher, loaded strictly.
        num_classes: classifier outputs (linked to the data module's in train.py).
        ce_weight: weight of the cross-entropy with the labels.
        kd_weight: weight of the KD loss (ignored without a teacher).
        kd_temperature: softmax temperature T of the KD loss (> 0).
        feature_scale: scale of the cosine feature loss on the final feature maps; 0 disables it.
        lr: peak SGD learning rate, annealed to 0 by a cosine schedule over the run.
        momentum: SGD momentum (Nesterov).
        weight_decay: L2 weight decay, applied to conv/linear weights only (not BN or biases).
        input_size: (C, H, W) of one input, used to infer feature points of models that
            declare none.
        student_spec: filled in automatically so a checkpoint rebuilds its student without
            the JSON file; leave unset.
    """

    def __init__(
        self,
        student: str,
        teacher: str | None = None,
        teacher_checkpoint: str | None = None,
        num_classes: int = 10,
        ce_weight: float = 1.0,
        kd_weight: float = 1.0,
        kd_temperature: float = 4.0,
        feature_scale: float = 1.0,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        input_size: tuple[int, int, int] = (3, 32, 32),
        student_spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        for name, value in {"kd_temperature": kd_temperature, "lr": lr}.items():
            if value <= 0:
                raise DasError(f"{name}={value} must be > 0")
        for name, value in {"ce_weight": ce_weight, "kd_weight": kd_weight, "feature_scale": feature_scale, "weight_decay": weight_decay}.items():
            if value < 0:
                raise DasError(f"{name}={value} must be >= 0")
        if teacher is None and teacher_checkpoint is not None:
            raise DasError(f"teacher_checkpoint={teacher_checkpoint!r} is given but no teacher; set --model.teacher to the checkpoint's architecture")
        if student_spec is None and (student.endswith(".json") or student.lstrip().startswith("{")):
            student_spec = ArchSpec.load(student).to_dict() if student.endswith(".json") else ArchSpec.from_json(student).to_dict()
        self.save_hyperparameters()
        example = torch.zeros(2, *input_size)
        self.student = build_model(ArchSpec.from_dict(student_spec) if student_spec else student, num_classes)
        self.student_points = feature_points(self.student, example)
        self.teacher: nn.Module | None = None
        self.projector: nn.Module = nn.Identity()
        if teacher is not None:
            self.teacher = build_model(teacher, num_classes, checkpoint=teacher_checkpoint)
            self.teacher.requires_grad_(False).eval()
            self.teacher_points = feature_points(self.teacher, example)
            self.projector = projector(final_point(self.student_points).channels, final_point(self.teacher_points).channels)

    @property
    def uses_features(self) -> bool:
        return self.teacher is not None and self.hparams.feature_scale > 0

    def train(self, mode: bool = True) -> DistillModule:
        """Switch the student to ``mode`` but keep the teacher in eval mode, always."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def _run(self, model: nn.Module, points: list[FeaturePoint], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.uses_features:
            return model(x), None
        name = final_point(points).module
        with FeatureTap(model, [name]) as tap:
            logits = model(x)
        return logits, tap.outputs[name]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _idx: int) -> torch.Tensor:
        x, y = batch
        hp = self.hparams
        logits, s_map = self._run(self.student, self.student_points, x)
        ce = F.cross_entropy(logits, y)
        loss = hp.ce_weight * ce
        if self.teacher is not None:
            with torch.no_grad():
                t_logits, t_map = self._run(self.teacher, self.teacher_points, x)
            kd = kd_loss(logits, t_logits, hp.kd_temperature)
            loss = loss + hp.kd_weight * kd
            self.log("train/kd", kd)
            if s_map is not None and t_map is not None:
                feat = cosine_feature_loss(self.projector(s_map), t_map, hp.feature_scale)
                loss = loss + feat
                self.log("train/feature", feat)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(
                f"training loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step} with model.lr={hp.lr:g}; "
                "lower it (the quickstart uses 0.05)"
            )
        self.log("train/ce", ce)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        logits = self.student(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y))
        self.log(f"{stage}/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        trainable = [p for p in list(self.student.parameters()) + list(self.projector.parameters()) if p.requires_grad]
        # Decaying BN scales and biases only shrinks them toward a worse optimum (Goyal et al. 2017).
        decay = [p for p in trainable if p.ndim > 1]
        no_decay = [p for p in trainable if p.ndim <= 1]
        optimizer = torch.optim.SGD(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr, momentum=hp.momentum, nesterov=hp.momentum > 0,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the frozen teacher out of the student's checkpoint (it is rebuilt from its spec); keep the generators."""
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")}
        checkpoint["das_rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.teacher is not None:
            checkpoint["state_dict"].update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
        # Only when a Trainer resumes a fit (not load_from_checkpoint): from here until the next
        # epoch draws its first shuffle, a resumed fit draws from the generators exactly as the
        # uninterrupted run did after saving this checkpoint, provided the resumed Trainer skips
        # its sanity check (train.py does). tests/cli/test_train_cli.py checks the weights match.
        states = checkpoint.get("das_rng_states")
        if states is not None and self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING:
            set_rng_states(states)
