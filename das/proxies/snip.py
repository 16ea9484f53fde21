"""``snip``: connection sensitivity summed over the network.

Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019
(eq. 6, the saliency ``|∂L/∂c ⊙ ...|`` of each connection, which for a unit mask is
``|∂L/∂W ⊙ W|``); used as a NAS proxy by Abdelfattah et al., ICLR 2021 (Spearman ρ .60 on
NAS-Bench-201 CIFAR-10): ``Σ |∂L/∂W ⊙ W|`` over the weights of every convolution and linear
layer, L the cross-entropy of the first probe batch. Reads the shared backward.
"""

from __future__ import annotations

from das.proxies.base import register_proxy
from das.proxies.context import ScoringContext


@register_proxy("snip", needs={"weight_grads"})
def snip(ctx: ScoringContext) -> float:
    """Σ |∂L/∂W ⊙ W| over conv/linear weights."""
    weights = [m.weight for _, m in ctx.layers]
    return float(sum((g.double() * w.detach().double()).abs().sum() for g, w in zip(ctx.weight_grads(), weights)))
