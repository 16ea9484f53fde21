"""``nwot``: NASWOT, how differently the ReLUs partition the probe images.

Mellor et al., "Neural Architecture Search without Training", ICML 2021 (eq. 2; Spearman ρ .77
on NAS-Bench-201 CIFAR-10 in NAS-Bench-Suite-Zero). Every ReLU turns its input into a binary
code per image (1 where the unit is active). With c_i the concatenated codes of image i over the
ReLU's N_A units and d_H the Hamming distance, the kernel is

    K_ij = Σ_ReLUs (N_A − d_H(c_i, c_j)) = Σ_ReLUs [c cᵀ + (1 − c)(1 − c)ᵀ]_ij

(summed over every ``nn.ReLU`` module, as the authors' code hooks them) and the score is
``log |det K|``. Images that the network cannot tell apart make K close to singular.

K is built in forward hooks of the shared labelled forward (one B×B product per ReLU). Its
entries are integers, so a non-singular K has det ≥ 1 and log det ≥ 0; a singular K (two
probe images with identical codes in every ReLU, e.g. a network that ignores its input, or a
batch with a repeated image) has log det = −∞ in the authors' code, and das scores it 0, the
floor of every non-singular kernel. ReLUs called as functions (``F.relu``) are not seen.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from das.proxies.base import register_proxy
from das.proxies.context import ScoringContext, Tap, register_tap


@register_tap("relu_kernel")
class ReluKernel(Tap):
    """K = Σ over nn.ReLU modules of c cᵀ + (1−c)(1−c)ᵀ, c the binary codes of the ReLU input."""

    def install(self, model: nn.Module, x: torch.Tensor) -> list[Any]:
        self.kernel = torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device)
        # Several ReLUs often read one tensor (an NB201 node feeds each of its conv edges through
        # its own ReLU); their terms are equal, so each distinct input is computed once.
        self._seen: dict[int, tuple[weakref.ref, torch.Tensor]] = {}
        return [m.register_forward_hook(self._on_relu) for m in model.modules() if isinstance(m, nn.ReLU)]

    def _on_relu(self, _m: nn.Module, inputs: tuple, _out: torch.Tensor) -> None:
        inp = inputs[0]
        known = self._seen.get(id(inp))
        if known is not None and known[0]() is inp:
            self.kernel += known[1]
            return
        codes = (inp.detach().flatten(1) > 0).float()
        units = codes.shape[1]
        # Σ_f (1−c_if)(1−c_jf) = N − s_i − s_j + (c cᵀ)_ij, so one product per ReLU suffices; its
        # entries are integer counts below 2**24, exact in float32.
        same_on = (codes @ codes.T).double()
        active = codes.sum(1).double()
        term = 2 * same_on + units - active[:, None] - active[None, :]
        self._seen[id(inp)] = (weakref.ref(inp), term)
        self.kernel += term

    def close(self) -> None:
        self._seen = {}


def log_det(kernel: torch.Tensor) -> float:
    """log det of an integer PSD kernel; 0 (the floor of a non-singular one) when singular."""
    sign, value = torch.linalg.slogdet(kernel)
    if sign <= 0 or not torch.isfinite(value):
        return 0.0
    return max(float(value), 0.0)


@register_proxy("nwot", needs={"relu_kernel"})
def nwot(ctx: ScoringContext) -> float:
    """log |det K| of the binary ReLU-code kernel of the first probe batch."""
    tap: Any = ctx.tap("relu_kernel")
    return log_det(tap.kernel)
