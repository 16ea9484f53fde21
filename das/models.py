"""Build any network das knows from one string: a searched student or a teacher spec."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from das.spec import ArchSpec


def build_model(spec: str | ArchSpec, num_classes: int, checkpoint: str | None = None) -> nn.Module:
    """Build a network.

    Args:
        spec: an :class:`ArchSpec`, a path to an architecture JSON (``best_arch.json``), an
            inline ArchSpec JSON, or a teacher spec (``resnet20``, ``timm:NAME``,
            ``torchvision:NAME``, ``package.module:function``).
        num_classes: classifier outputs.
        checkpoint: optional local weights, loaded strictly.
    """
    if isinstance(spec, str) and spec.lstrip().startswith("{"):
        spec = ArchSpec.from_json(spec)
    elif isinstance(spec, str) and spec.endswith(".json"):
        spec = ArchSpec.load(Path(spec))
    if isinstance(spec, ArchSpec):
        model = spec.build(num_classes)
        if checkpoint:
            from teachers.checkpoint import load_checkpoint

            load_checkpoint(model, checkpoint)
        return model
    from teachers import create_teacher

    return create_teacher(spec, checkpoint=checkpoint, num_classes=num_classes)
