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
from das.distill.pairing import FeaturePair, FeatureProjectors, pair_by_names, pair_stages

__all__ = [
    "LOSSES",
    "DistillModule",
    "FeaturePair",
    "FeatureProjectors",
    "LossConfig",
    "LossInputs",
    "LossSpec",
    "LossTerm",
    "LossValues",
    "cosine_feature_loss",
    "fitnet_loss",
    "kd_loss",
    "pair_by_names",
    "pair_stages",
    "projector",
    "register_loss",
    "relation_loss",
]
