"""``zico``: ZiCo, gradients that are large and consistent across batches.

Li et al., "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on Gradients", ICLR 2023
(eq. 8). With g_θ,b = ∂L_b/∂θ the cross-entropy gradient of weight θ on probe batch b, and for
each convolution or linear layer l:

    zico = Σ_l log( Σ_{θ∈l} mean_b |g_θ,b| / std_b(g_θ,b) )

(population std over batches; weights whose gradient has std 0 are left out, and a layer whose
sum is 0 adds nothing, as in the authors' code). The std needs at least two batches, so zico
needs ≥ 2 probe batches and says so; it uses every probe batch given. The first batch's
gradients are the shared backward; each further batch costs one forward+backward.
"""

from __future__ import annotations

import math

import torch

from das.proxies.base import register_proxy
from das.proxies.context import ScoringContext


def zico_score(per_batch: list[list[torch.Tensor]]) -> float:
    """ZiCo from per-batch lists of per-layer gradients (same layers in every batch)."""
    sizes = [g.numel() for g in per_batch[0]]
    grads = torch.stack([torch.cat([g.flatten() for g in batch]) for batch in per_batch]).double()  # batches × weights
    std = grads.std(0, correction=0)
    ratio = torch.where(std != 0, grads.abs().mean(0) / std, torch.zeros_like(std))
    total = 0.0
    for layer_sum in ratio.split(sizes):
        value = float(layer_sum.sum())
        if value > 0:
            total += math.log(value)
    return total


@register_proxy("zico", needs={"batch_grads"}, min_batches=2)
def zico(ctx: ScoringContext) -> float:
    """Σ over layers of log Σ mean|g|/std(g), over ≥ 2 probe batches."""
    return zico_score(ctx.batch_grads())
