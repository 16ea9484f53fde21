"""``grad_norm``: the summed norms of the loss gradient of every layer.

Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021 (§3; Spearman ρ .59 on
NAS-Bench-201 CIFAR-10): ``Σ_l ‖∂L/∂W_l‖₂`` over the weight tensors of the convolution and
linear layers, with L the cross-entropy of the first probe batch at initialisation (Frobenius
norm per layer, then summed, as the authors' code does). Reads the shared backward.
"""

from __future__ import annotations

from das.proxies.base import register_proxy
from das.proxies.context import ScoringContext


@register_proxy("grad_norm", needs={"weight_grads"})
def grad_norm(ctx: ScoringContext) -> float:
    """Σ over conv/linear layers of ‖∂L/∂W‖₂."""
    return float(sum(g.double().norm() for g in ctx.weight_grads()))
