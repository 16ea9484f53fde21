"""``timm:NAME`` teachers and students: a timm architecture by name, with its feature points.

The model is ``timm.create_model(NAME, pretrained=False, num_classes=...)``: built by name only,
never downloaded (weights come from a local checkpoint). Its feature points come from timm's
own metadata where timm has it: the stages are timm's ``feature_info`` (``num_chs``,
``reduction``, ``module``), the final map is the output of ``forward_features`` (the map the
classifier pools, found by one dry forward pass, :func:`das.nets.tracing.trace`), and the
logits are ``get_classifier()``. Models without a channels-first 4-D map there (vision
transformers' tokens, channels-last Swin features) are refused.
"""

from __future__ import annotations

from torch import nn

from das.errors import DasError, close_names_hint
from das.nets.timm_points import timm_points
from das.nets.tracing import DeclaredPoints

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
