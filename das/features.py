"""Feature contract and extraction by forward hooks.

Every network das scores or distils (teacher or student) exposes *feature points*: named
modules whose outputs are its stage feature maps, its final pre-pool feature map and its
logits, with their channel counts and reduction (stride) relative to the input. The DisWOT
scorer and the distiller read this contract instead of hard-coding layer names (cf. timm's
``feature_info``).

A model declares its points with a ``feature_points() -> list[FeaturePoint]`` method. For a
model that does not (a user's own teacher), :func:`infer_feature_points` finds them with one
dry forward pass: the last 4-D module output before the last ``nn.Linear``, and that Linear.

Outputs are captured with forward hooks on ``named_modules()`` names, which work on any eager
model (unlike FX tracing, which fails on data-dependent control flow).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from das.errors import DasError, close_matches_hint

Role = Literal["stage", "final", "logits"]


@dataclass(frozen=True)
class FeaturePoint:
    """One named module whose output is a feature of the network.

    Attributes:
        module: the name in ``model.named_modules()``.
        channels: channels of the output (features of a Linear for ``logits``).
        reduction: input size / output spatial size (1 for logits).
        role: ``stage`` (an intermediate stage output), ``final`` (the feature map that the
            classifier pools; exactly one), or ``logits`` (the classifier Linear; exactly one).
    """

    module: str
    channels: int
    reduction: int
    role: Role = "stage"


def final_point(points: Sequence[FeaturePoint]) -> FeaturePoint:
    """The pre-pool feature map among ``points``."""
    return _one(points, "final")


def logits_point(points: Sequence[FeaturePoint]) -> FeaturePoint:
    """The classifier among ``points`` (its module is an ``nn.Linear``)."""
    return _one(points, "logits")


def map_points(points: Sequence[FeaturePoint]) -> list[FeaturePoint]:
    """The 4-D feature maps (stages then final), in network order."""
    return [p for p in points if p.role != "logits"]


def _one(points: Sequence[FeaturePoint], role: Role) -> FeaturePoint:
    found = [p for p in points if p.role == role]
    if len(found) != 1:
        raise DasError(f"expected exactly one {role!r} feature point, got {len(found)}: {list(points)}")
    return found[0]


def feature_points(model: nn.Module, example: torch.Tensor | None = None) -> list[FeaturePoint]:
    """The model's declared feature points, or inferred ones when it declares none.

    Args:
        model: any classification network.
        example: an input batch, needed only to infer points for a model that declares none.
    """
    declared = getattr(model, "feature_points", None)
    if callable(declared):
        points = list(declared())
    else:
        if example is None:
            raise DasError(
                f"{type(model).__name__} declares no feature_points(); pass an example input "
                "so das can infer them, or add a feature_points() method to the model"
            )
        points = infer_feature_points(model, example)
    validate_module_names(model, [p.module for p in points])
    final_point(points)
    logits_point(points)
    return points


def infer_feature_points(model: nn.Module, example: torch.Tensor) -> list[FeaturePoint]:
    """Find the pre-pool feature map and the classifier by one dry forward pass.

    The classifier is the last ``nn.Linear`` to run; the final map is the last 4-D output with a
    spatial extent (not a global pool's 1×1) of a module that ran before it (containers are
    preferred when they end at the same tensor, so a stage name is reported rather than its
    last ReLU).
    """
    order: list[tuple[str, torch.Tensor]] = []
    hooks = [
        module.register_forward_hook(_recorder(name, order))
        for name, module in model.named_modules()
        if name
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example[:2])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    modules = dict(model.named_modules())
    linear_idx = [i for i, (name, _) in enumerate(order) if isinstance(modules[name], nn.Linear)]
    if not linear_idx:
        raise DasError(f"cannot infer feature points of {type(model).__name__}: it has no nn.Linear classifier")
    last = linear_idx[-1]
    classifier, logits = order[last]
    maps = [(n, t) for n, t in order[:last] if t.dim() == 4]
    if not maps:
        raise DasError(f"cannot infer feature points of {type(model).__name__}: no 4-D feature map before {classifier!r}")
    # Hooks fire in completion order, so a container finishes after its last child: the last
    # recorded 4-D output is the outermost module that produced the final map. A global pool's
    # 1×1 output is not the map to compare, so maps with a spatial extent are preferred.
    spatial = [(n, t) for n, t in maps if t.shape[-1] * t.shape[-2] > 1]
    final_name, final = (spatial or maps)[-1]
    reduction = max(1, example.shape[-1] // final.shape[-1])
    return [
        FeaturePoint(final_name, final.shape[1], reduction, "final"),
        FeaturePoint(classifier, logits.shape[-1], 1, "logits"),
    ]


def _recorder(name: str, order: list[tuple[str, torch.Tensor]]):
    def hook(_module: nn.Module, _inputs: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor):
            order.append((name, output.detach()))

    return hook


def validate_module_names(model: nn.Module, names: Sequence[str]) -> None:
    """Raise a one-line error naming any module that ``model`` does not have."""
    available = {name for name, _ in model.named_modules() if name}
    for name in names:
        if name not in available:
            raise DasError(
                f"module {name!r} is not in {type(model).__name__}: {close_matches_hint(name, available)}"
            )


class FeatureTap:
    """Context manager that records the outputs of named modules on every forward.

    >>> with FeatureTap(model, ["layer3", "linear"]) as tap:
    ...     logits = model(x)
    >>> tap.outputs["layer3"].shape

    Outputs keep their autograd graph (so a loss can flow through them) unless ``detach``.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], detach: bool = False) -> None:
        validate_module_names(model, names)
        self.model = model
        self.names = list(names)
        self.detach = detach
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> FeatureTap:
        modules = dict(self.model.named_modules())
        for name in self.names:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            self.outputs[name] = output.detach() if self.detach else output

        return hook
