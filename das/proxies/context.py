"""What a proxy reads: the model, the probe batches, and passes computed once per model.

Every pass is memoised on the context, so when several proxies read the same activations the
model runs once. Scoring puts the model in train mode (batch statistics at initialisation, as
zero-cost proxy papers do); :func:`das.proxies.state.preserved` undoes every side effect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import nn

from das.errors import DasError
from das.features import FeaturePoint, feature_points, final_point, logits_point

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Capture:
    """One forward pass seen at the feature contract.

    Attributes:
        final_map: the pre-pool feature map (B×C×H×W).
        classifier_input: what the classifier Linear receives (B×C).
        logits: the network output (B×K).
    """

    final_map: torch.Tensor
    classifier_input: torch.Tensor
    logits: torch.Tensor


def capture(model: nn.Module, x: torch.Tensor, points: list[FeaturePoint]) -> Capture:
    """Run ``model`` on ``x`` without gradients, recording the final map and classifier input."""
    modules = dict(model.named_modules())
    final_name, classifier_name = final_point(points).module, logits_point(points).module
    seen: dict[str, Any] = {}

    def on_final(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
        seen["final"] = out

    def on_classifier(_m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        seen["input"], seen["logits"] = inputs[0], out

    handles = [
        modules[final_name].register_forward_hook(on_final),
        modules[classifier_name].register_forward_hook(on_classifier),
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if seen["input"].dim() != 2:
        raise DasError(f"classifier {classifier_name!r} receives a {seen['input'].dim()}-D input; das expects pooled B×C features")
    return Capture(seen["final"].float(), seen["input"].float(), seen["logits"].float())


class ScoringContext:
    """The model, its probe batches and (optionally) a teacher reference, with memoised passes.

    Args:
        model: the network being scored (left unchanged by scoring).
        batches: labelled probe batches ``(x, y)``, already on the model's device.
        teacher: whatever teacher-dependent proxies compare against (e.g. a DisWOT reference).
    """

    def __init__(self, model: nn.Module, batches: list[Batch], teacher: Any = None) -> None:
        if not batches:
            raise DasError("scoring needs at least one probe batch, got none")
        self.model = model
        self.batches = batches
        self.teacher = teacher
        self._memo: dict[str, Any] = {}

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """Compute a value shared by several proxies once per model."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @cached_property
    def points(self) -> list[FeaturePoint]:
        return feature_points(self.model, self.batches[0][0])

    @cached_property
    def first_capture(self) -> Capture:
        """Final map, classifier input and logits on the first batch, in train mode."""
        self.model.train()
        return capture(self.model, self.batches[0][0], self.points)
