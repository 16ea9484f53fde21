"""``swap``: SWAP, the number of distinct sample-wise activation patterns.

Peng et al., "SWAP-NAS: Sample-Wise Activation Patterns for Ultra-fast NAS", ICLR 2024 (§3.2,
eq. 4). Each ReLU unit of the network gets a pattern: the binary vector of whether it is active
on each of the B probe images. SWAP is the number of distinct patterns over all units of every
``nn.ReLU`` module with a 4-D input (the modules the authors' code hooks):

    swap = |{ (1[z_u(x_1) > 0], …, 1[z_u(x_B) > 0]) : u a ReLU unit }|

It is bounded by the number of ReLU units and by 2^B, and grows with how many different ways
the network can slice the probe set.

Plain SWAP is implemented. The paper's regularised variant multiplies by
exp(−(params − μ)²/σ) with μ, σ tuned per search space and budget; those are not defined for
an arbitrary space, so das leaves regularisation to the search (a budget constraint, or an
ensemble with ``params``).

The patterns are packed into int64 words (64 images per word) in forward hooks of the shared
labelled forward, so memory stays at 8 bytes per unit per 64 images.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from das.proxies.base import register_proxy
from das.proxies.context import ScoringContext, Tap, register_tap

_WORD = 64


def pack_patterns(codes: torch.Tensor) -> torch.Tensor:
    """Pack a B×N boolean matrix into N×⌈B/64⌉ int64 words, one row per unit."""
    n_images, units = codes.shape
    pad = -n_images % _WORD
    if pad:
        codes = torch.cat([codes, codes.new_zeros(pad, units)])
    bits = codes.to(torch.uint8).view(-1, 8, units)  # 8 images per byte
    packed = torch.zeros(bits.shape[0], units, dtype=torch.uint8, device=codes.device)
    for k in range(8):
        packed |= bits[:, k] << k
    # 8 bytes of one unit side by side are one int64 word (any byte order is one-to-one)
    return packed.T.contiguous().view(torch.int64)


@register_tap("relu_patterns")
class ReluPatterns(Tap):
    """Packed activation patterns of every unit of every nn.ReLU with a 4-D input."""

    def install(self, model: nn.Module, x: torch.Tensor) -> list[Any]:
        self.words: list[torch.Tensor] = []
        # ReLUs reading a tensor already seen repeat its patterns, which cannot change the count.
        self._seen: dict[int, weakref.ref] = {}
        return [m.register_forward_hook(self._on_relu) for m in model.modules() if isinstance(m, nn.ReLU)]

    def _on_relu(self, _m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        inp = inputs[0]
        if inp.dim() != 4:
            return
        known = self._seen.get(id(inp))
        if known is not None and known() is inp:
            return
        self._seen[id(inp)] = weakref.ref(inp)
        self.words.append(pack_patterns(out.detach().flatten(1) > 0))

    def close(self) -> None:
        self._seen = {}


def count_patterns(words: list[torch.Tensor]) -> int:
    if not words:
        return 0
    packed = torch.cat(words)
    if packed.shape[1] == 1:
        return int(torch.unique(packed[:, 0]).numel())
    return int(torch.unique(packed, dim=0).shape[0])


@register_proxy("swap", needs={"relu_patterns"})
def swap(ctx: ScoringContext) -> float:
    """Number of distinct activation patterns of the ReLU units over the first probe batch."""
    tap: Any = ctx.tap("relu_patterns")
    return float(count_patterns(tap.words))
