"""A timm model's feature points, from timm's own metadata where timm has it.

The stages are timm's ``feature_info`` (``num_chs``, ``reduction``, ``module``), the final map is
the output of ``forward_features`` (found by one dry forward pass, :func:`das.nets.tracing.trace`)
and the logits are ``get_classifier()``. Shared by ``timm:NAME`` teachers
(:mod:`teachers.timm_models`) and the ``timm`` search space (:mod:`das.spaces.timm_space`).
"""

from __future__ import annotations

from torch import nn

from das.features import FeaturePoint
from das.nets.tracing import classifier_point, is_nchw, no_map_error, producer, trace

__all__ = ["timm_points"]


def timm_points(model: nn.Module, name: str) -> list[FeaturePoint]:
    """Final map = output of ``forward_features``; stages = timm's ``feature_info``; logits = ``get_classifier()``."""
    what = f"timm model {name!r}"
    size = tuple(getattr(model, "pretrained_cfg", {}).get("input_size") or (3, 224, 224))
    calls, out = trace(model, "forward_features", size)
    # The channel check rejects channels-last (NHWC) features such as Swin's.
    final = producer(calls, out) if is_nchw(out, getattr(model, "num_features", None)) else None
    if final is None:
        raise no_map_error(what)
    logits = classifier_point(model, model.get_classifier(), what)
    outputs = {c.name: c.output for c in calls}
    stages = [
        FeaturePoint(info["module"], info["num_chs"], info["reduction"], "stage")
        for info in getattr(model, "feature_info", [])
        if is_nchw(outputs.get(info["module"]), info["num_chs"]) and outputs[info["module"]] is not out
    ]
    return [*stages, FeaturePoint(final, out.shape[1], size[-1] // out.shape[-1], "final"), logits]
