"""Knowledge distillation with Lightning: losses, the DistillModule, and a one-call trainer."""

from das.distill.losses import (
    LOSSES,
    LossConfig,
    LossInputs,
    LossSpec,
    LossTerm,
    LossValues,
    cosine_feature_loss,
    fitnet_loss,
    kd_loss,
    projector,
    register_loss,
    relation_loss,
)
from das.distill.module import DistillModule

__all__ = [
    "LOSSES",
    "DistillModule",
    "LossConfig",
    "LossInputs",
    "LossSpec",
    "LossTerm",
    "LossValues",
    "cosine_feature_loss",
    "fitnet_loss",
    "kd_loss",
    "projector",
    "register_loss",
    "relation_loss",
]
