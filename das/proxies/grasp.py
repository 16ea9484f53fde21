"""``grasp``: gradient signal preservation.

Wang et al., "Picking Winning Tickets Before Training by Preserving Gradient Flow", ICLR 2020
(eq. 8, the score S(−θ) = −θ ⊙ H g), as a NAS proxy in Abdelfattah et al., ICLR 2021. With g =
∂L/∂W the cross-entropy gradient of the conv/linear weights on the first probe batch and H the
Hessian of L with respect to those weights:

    grasp = −Σ W ⊙ (H g)

summed over every conv/linear weight. Sign: this is the zero-cost-nas convention (its
``compute_grasp_per_weight`` returns −θ·Hg per weight and the sum is the score, higher is
better, the sign behind the published NAS-Bench-201 correlation); NASLib uses the same.

H g is a Hessian-vector product: the gradient of (g · ∂L/∂W), where the shared cross-entropy
backward records its own graph (``create_graph=True``; the gradients it returns are bitwise the
ones a plain backward gives, so the other proxies read the same values). GraSP therefore adds one
backward pass through that double graph and no forward; on CPU it is still the most expensive
proxy (BatchNorm's double backward is a long chain of elementwise ops).
"""

from __future__ import annotations

from typing import Any

import torch

from das.proxies.base import register_proxy
from das.proxies.context import LabelledPass, ScoringContext, Tap, register_tap


@register_tap("hessian_grad")
class HessianGrad(Tap):
    """H·g for the conv/linear weights, g the CE gradient, on the shared forward's graph."""

    autograd = True
    create_graph = True

    def after(self, labelled: LabelledPass) -> None:
        assert labelled.weight_grads is not None and labelled.graph_grads is not None
        grads = labelled.graph_grads
        used = [(w, g, d) for w, g, d in zip(labelled.weights, grads, labelled.weight_grads) if g is not None]
        self.hg = [torch.zeros_like(w) for w in labelled.weights]
        if not used:
            return
        dot = sum((d.detach() * g).sum() for _, g, d in used)
        if not dot.requires_grad:  # the loss is linear in every weight it reads: H g = 0
            return
        hvp = torch.autograd.grad(dot, [w for w, _, _ in used], retain_graph=True, allow_unused=True)
        index = {id(w): i for i, w in enumerate(labelled.weights)}
        for (w, _, _), h in zip(used, hvp):
            if h is not None:
                self.hg[index[id(w)]] = h.detach()


@register_proxy("grasp", needs={"hessian_grad"})
def grasp(ctx: ScoringContext) -> float:
    """−Σ W ⊙ (H g) over conv/linear weights (zero-cost-nas sign)."""
    tap: Any = ctx.tap("hessian_grad")
    weights = [m.weight for _, m in ctx.layers]
    return float(-sum((w.detach().double() * h.double()).sum() for w, h in zip(weights, tap.hg)))
