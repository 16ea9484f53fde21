"""Knowledge distillation with Lightning: losses, the DistillModule, and a one-call trainer."""

from das.distill.losses import cosine_feature_loss, kd_loss, projector
from das.distill.module import DistillModule

__all__ = ["DistillModule", "cosine_feature_loss", "kd_loss", "projector"]
