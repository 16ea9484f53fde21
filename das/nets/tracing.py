"""Feature points of a library model, read from one dry forward pass on the ``meta`` device.

timm and torchvision models do not declare das's feature points (:mod:`das.features`), so the
adapters derive them: :func:`trace` runs a model once with meta tensors in place of its weights
(every shape, no FLOPs, the real weights untouched) and records every submodule call; the
helpers below find the map the classifier pools and the ``nn.Linear`` classifier in that record;
:class:`DeclaredPoints` attaches the result to the model as its ``feature_points()``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.func import functional_call

from das.errors import DasError
from das.features import FeaturePoint

__all__ = ["Call", "DeclaredPoints", "classifier_point", "is_global_pool", "is_nchw", "no_map_error", "producer", "trace"]

# Pooling layers which, when global, read "the map the classifier pools" in torchvision models.
_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)


@dataclass(frozen=True)
class DeclaredPoints:
    """A ``feature_points()`` callable attached to a model instance that has no such method.

    A small class rather than a lambda so the model still pickles (e.g. to spawned workers).
    """

    points: tuple[FeaturePoint, ...]

    def __call__(self) -> list[FeaturePoint]:
        return list(self.points)


class Call(NamedTuple):
    """One submodule call of a traced forward: its ``named_modules()`` name, input and output."""

    name: str
    module: nn.Module
    input: object
    output: object


class _Method(nn.Module):
    """Calls one method of ``model`` as ``forward``, so ``functional_call`` can run it."""

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, x: torch.Tensor) -> Any:
        return getattr(self.model, self.method)(x)


def trace(model: nn.Module, method: str, input_size: tuple[int, ...]) -> tuple[list[Call], Any]:
    """Run ``model.<method>`` on one input, recording every submodule call in completion order.

    The run uses meta tensors in place of the weights: it yields every shape at no cost in
    compute or memory, even for a large teacher, and leaves the real weights untouched. A
    forward that makes data of its own (``.item()``, CPU constants) cannot run on meta, so it
    falls back to one real pass on a single zero image.
    """
    calls: list[Call] = []

    def recorder(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            calls.append(Call(name, module, inputs[0] if inputs else None, output))

        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in model.named_modules() if n]
    wrapper = _Method(model, method)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                tensors = itertools.chain(model.named_parameters(), model.named_buffers())
                meta = {f"model.{k}": torch.empty_like(v, device="meta") for k, v in tensors}
                out = functional_call(wrapper, meta, (torch.empty(1, *input_size, device="meta"),))
            except Exception:
                calls.clear()
                out = wrapper(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return calls, out


def producer(calls: list[Call], tensor: object) -> str | None:
    """The outermost module (the last to finish) whose output is ``tensor``, skipping Identity."""
    names = [c.name for c in calls if c.output is tensor and not isinstance(c.module, nn.Identity)]
    return names[-1] if names else None


def is_global_pool(call: Call) -> bool:
    """A pooling layer that takes a spatial map to one value per channel (not a stride-2 pool)."""
    out = call.output
    flat = isinstance(out, torch.Tensor) and (out.dim() == 2 or (out.dim() == 4 and out.shape[-2:] == (1, 1)))
    return isinstance(call.module, _POOLS) and is_nchw(call.input) and flat


def is_nchw(t: object, channels: int | None = None) -> bool:
    """A channels-first 4-D tensor (with ``channels`` channels when given)."""
    return isinstance(t, torch.Tensor) and t.dim() == 4 and (channels is None or t.shape[1] == channels)


def classifier_point(model: nn.Module, classifier: object, what: str) -> FeaturePoint:
    """The logits point of ``classifier``, which must be an ``nn.Linear`` submodule of ``model``."""
    name = next((n for n, m in model.named_modules() if m is classifier and n), None)
    if name is None or not isinstance(classifier, nn.Linear):
        raise DasError(
            f"{what} has no nn.Linear classifier (it has {type(classifier).__name__}), which das's "
            "logit distillation needs; pick another model or wrap it in a package.module:function teacher"
        )
    return FeaturePoint(name, classifier.out_features, 1, "logits")


def no_map_error(what: str) -> DasError:
    """The refusal for a model with no channels-first 4-D map before its head."""
    return DasError(
        f"{what} gives no channels-first 4-D feature map before its classifier (e.g. a vision "
        "transformer's tokens), which das's feature distillation needs; use a convolutional model "
        "or a package.module:function teacher with a feature_points() method"
    )
