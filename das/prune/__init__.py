"""Pruning: unstructured masks at initialisation (PX, SNIP, SynFlow, magnitude, random), kept fixed
through training; channel slimming by BatchNorm scale is :mod:`das.prune.slim`. prune.py's
command is :mod:`das.prune.command` (its ``prune:`` section :mod:`das.prune.config`, its two
modes :mod:`das.prune.masked_run` and :mod:`das.prune.slim_run`)."""

from das.prune import baselines as _baselines  # noqa: F401  (each import registers its methods)
from das.prune import px as _px  # noqa: F401
from das.prune.at_init import SCOPES, check_density, prune_at_init, saliency_scores
from das.nets.masks import WeightMask, applied_masks, apply_masks, density_report, masks_from_state_dict, remove_masks
from das.prune.registry import SALIENCIES, Saliency, ScoringInputs, register_saliency
from das.prune.select import exponential_schedule
from das.nets.weights import prunable_weights

__all__ = [
    "SALIENCIES",
    "SCOPES",
    "Saliency",
    "ScoringInputs",
    "WeightMask",
    "applied_masks",
    "apply_masks",
    "check_density",
    "density_report",
    "exponential_schedule",
    "masks_from_state_dict",
    "prunable_weights",
    "prune_at_init",
    "register_saliency",
    "remove_masks",
    "saliency_scores",
]
