"""``fisher``: the Fisher-information saliency of every channel, summed.

Theis et al., "Faster gaze prediction with dense networks and Fisher pruning", 2018 (eq. 6),
as used for NAS by Turner et al., "BlockSwap: Fisher-guided Block Substitution for Network
Compression on a Budget", ICLR 2020, and Abdelfattah et al., ICLR 2021 (Spearman ρ .36 on
NAS-Bench-201 CIFAR-10). For each output channel k of each convolution or linear layer, with
``a`` its output activation and ``g = ∂L/∂a`` on the first probe batch of B samples:

    Δ_k = 1/(2B) Σ_n ( Σ_spatial a_nk · g_nk )²

and the score is Σ over layers and channels of Δ_k. The activations are the conv/linear
outputs of the shared labelled forward; their gradients are read by tensor hooks during the
shared cross-entropy backward (so fisher costs no pass of its own).

One difference from the authors' code (zero-cost-nas, also NASLib): before summing, that code
broadcasts each channel's Δ_k to every weight of the channel, so a channel counts
``fan_in = C_in·k_h·k_w`` times. das sums channels as the papers define the saliency; the two
totals rank networks differently where layers differ in fan-in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from das.proxies.base import register_proxy
from das.proxies.context import ScoringContext, Tap, register_tap


@register_tap("fisher")
class FisherTap(Tap):
    """Per-channel Fisher saliency of every conv/linear output, accumulated during the CE backward."""

    ce_backward = True

    def install(self, model: nn.Module, x: torch.Tensor) -> list[Any]:
        self.total = torch.zeros((), dtype=torch.float64, device=x.device)
        self._tensor_hooks: list[Any] = []
        return [m.register_forward_hook(self._on_output) for _, m in self.ctx.layers]

    def _on_output(self, _m: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        if not out.requires_grad:
            return
        act = out.detach()
        self._tensor_hooks.append(out.register_hook(lambda grad: self._accumulate(act, grad)))

    def _accumulate(self, act: torch.Tensor, grad: torch.Tensor) -> None:
        grad = grad.detach()  # a create_graph backward (GraSP) hands over graph-carrying grads
        per_sample = (act * grad).flatten(2).sum(2) if act.dim() > 2 else act * grad  # B×C
        self.total += 0.5 * per_sample.double().pow(2).mean(0).sum()

    def close(self) -> None:
        for h in self._tensor_hooks:
            h.remove()
        self._tensor_hooks = []


@register_proxy("fisher", needs={"fisher"})
def fisher(ctx: ScoringContext) -> float:
    """Σ over conv/linear output channels of ½·mean_batch((Σ_spatial a·∂L/∂a)²)."""
    return float(ctx.tap("fisher").total)  # type: ignore[attr-defined]
