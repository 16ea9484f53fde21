"""``torchvision:NAME`` teachers and students: a torchvision classification model by name.

The model is ``torchvision.models.get_model(NAME, weights=None, num_classes=...)``: built by name
only, never downloaded (weights come from a local checkpoint). Its feature points are found at
ImageNet size: the stages from torchvision's graph node names (:mod:`das.nets.graph_stages`:
``relu``, ``layer1`` ... ``layer3`` of a ResNet, the last block at each stride of a MobileNet or
EfficientNet); the final map is the input of the last global pooling layer before the last
``nn.Linear`` (or, where the pooling is functional as in DenseNet, the last spatial map before
it), by one dry forward pass; the logits are that Linear. Models without a channels-first 4-D
map before their head (vision transformers) are refused.
"""

from __future__ import annotations

import torch
from torch import nn

from das.errors import DasError, close_names_hint
from das.features import FeaturePoint
from das.nets.graph_stages import graph_stages
from das.nets.tracing import Call, DeclaredPoints, classifier_point, is_global_pool, is_nchw, no_map_error, producer, trace

__all__ = ["pooled_points", "torchvision_points", "torchvision_teacher"]

# torchvision classification models are ImageNet networks; their points are traced at this size.
_TORCHVISION_INPUT = (3, 224, 224)


def torchvision_teacher(name: str, num_classes: int) -> nn.Module:
    """``torchvision.models.get_model(name)`` with random weights and declared feature points."""
    from torchvision import models

    known = models.list_models(module=models)  # classification models only
    if name not in known:
        raise DasError(
            f"unknown torchvision classification model {name!r}: "
            f"{close_names_hint(name, known, 'torchvision.models.list_models(module=torchvision.models)')}"
        )
    model = models.get_model(name, weights=None, num_classes=num_classes)
    model.feature_points = DeclaredPoints(tuple(torchvision_points(model, f"torchvision:{name}")))
    return model


def torchvision_points(model: nn.Module, what: str, size: tuple[int, int, int] = _TORCHVISION_INPUT) -> list[FeaturePoint]:
    """Stages from the graph's node names, then the final map and the logits from a dry forward pass."""
    calls, _ = trace(model, "forward", size)
    final, logits = pooled_points(model, calls, what, size)
    return [*graph_stages(model, calls, final.module, size), final, logits]


def pooled_points(model: nn.Module, calls: list[Call], what: str, size: tuple[int, int, int]) -> tuple[FeaturePoint, FeaturePoint]:
    """Final map = the input of the last global pooling layer before the last nn.Linear; logits = that Linear."""
    linears = [i for i, c in enumerate(calls) if isinstance(c.module, nn.Linear)]
    if not linears:
        raise DasError(
            f"{what} has no nn.Linear classifier, which das's logit distillation needs; pick "
            "another model or wrap it in a package.module:function teacher"
        )
    before = calls[: linears[-1]]
    pooled = next((c.input for c in reversed(before) if is_global_pool(c)), None)
    final = producer(before, pooled) if pooled is not None else None
    if final is None:
        # Pooled by a functional call (e.g. densenet's F.adaptive_avg_pool2d): take the last
        # spatial map, unless token sequences follow it (then it is a ViT's patch embedding).
        maps = [i for i, c in enumerate(before) if is_nchw(c.output) and c.output.shape[-1] > 1]
        tokens_after = maps and any(
            isinstance(c.output, torch.Tensor) and c.output.dim() == 3 for c in before[maps[-1]:]
        )
        if not maps or tokens_after:
            raise no_map_error(what)
        pooled = before[maps[-1]].output
        final = producer(before, pooled)
    assert isinstance(pooled, torch.Tensor) and final is not None
    logits = classifier_point(model, calls[linears[-1]].module, what)
    return FeaturePoint(final, pooled.shape[1], size[-1] // pooled.shape[-1], "final"), logits
