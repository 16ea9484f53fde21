"""``timm:NAME`` teachers and students: a timm architecture by name, with its feature points.

The model is ``timm.create_model(NAME, pretrained=False, num_classes=...)``: built by name only,
never downloaded (weights come from a local checkpoint). Its feature points come from timm's
own metadata where timm has it: the stages are timm's ``feature_info`` (``num_chs``,
``reduction``, ``module``), the final map is the output of ``forward_features`` (the map the
classifier pools, found by one dry forward pass, :func:`teachers.tracing.trace`), and the
logits are ``get_classifier()``. Models without a channels-first 4-D map there (vision
transformers' tokens, channels-last Swin features) are refused.
"""

from __future__ import annotations

from torch import nn

from das.errors import DasError
from das.features import FeaturePoint
from teachers.registry import close_names_hint
from teachers.tracing import DeclaredPoints, classifier_point, is_nchw, no_map_error, producer, trace

__all__ = ["timm_points", "timm_teacher"]


def timm_teacher(name: str, num_classes: int) -> nn.Module:
    """``timm.create_model(name)`` with random weights and declared feature points."""
    import timm

    if not name or ":" in name or "/" in name:
        raise DasError(
            f"timm teacher {name!r} is not an architecture name: das builds timm models by name "
            "only and never downloads (no hf-hub: specs); use timm:ARCH with checkpoint=LOCAL_FILE"
        )
    if not timm.is_model(name):
        raise DasError(f"unknown timm model {name!r}: {close_names_hint(name, timm.list_models(), 'timm.list_models()')}")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    model.feature_points = DeclaredPoints(tuple(timm_points(model, name)))
    return model


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
