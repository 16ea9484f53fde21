"""``flops``: floating-point operations of one forward pass on one input.

A size baseline (Abdelfattah et al., ICLR 2021: Spearman ρ .69 on NAS-Bench-201 CIFAR-10) and
the complexity term of AZ-NAS. Counted by :func:`das.stats.count_flops` (PyTorch's maintained
``torch.utils.flop_counter``: convolutions and matrix products, 2 FLOPs per multiply-add) on one
input of the probe batch's shape; it runs its own single-sample forward in eval mode.
"""

from __future__ import annotations

from das.proxies.base import register_proxy
from das.proxies.context import ScoringContext
from das.stats import count_flops


def flop_count(ctx: ScoringContext) -> float:
    """FLOPs of the model on one probe input, counted once per context."""
    return ctx.memo("flops", lambda: float(count_flops(ctx.model, ctx.input_shape)))


@register_proxy("flops")
def flops(ctx: ScoringContext) -> float:
    """FLOPs of one forward pass on one input (more is better)."""
    return flop_count(ctx)
