"""``swap``: SWAP, the number of distinct sample-wise activation patterns.

Peng et al., "SWAP-NAS: Sample-Wise Activation Patterns for Ultra-fast NAS", ICLR 2024 (§3.2,
eq. 4). Each activation unit of the network gets a pattern: the binary vector of whether it is
active on each of the B probe images. SWAP is the number of distinct patterns over all units of
every activation with a 4-D input (the convolutional units the authors' code hooks):

    swap = |{ (1[z_u(x_1) > 0], …, 1[z_u(x_B) > 0]) : u a unit of a 4-D activation }|

It is bounded by the number of units and by 2^B, and grows with how many different ways the
network can slice the probe set.

The authors' code hooks ``nn.ReLU`` modules; das reads every activation the forward applies,
module or function (``nn.ReLU``, ``F.relu``, in place or not, and GELU, SiLU, Hardswish, ...,
with the sign of the pre-activation as the pattern: see :mod:`das.proxies.activations`). On a
network of ``nn.ReLU`` modules (NAS-Bench-201) the count is the one das gave before. Like the
paper, only 4-D (B×C×H×W) activations count, so a network without any, an MLP or a
transformer whose activations act on B×N or B×T×C tensors, is refused with a DasError rather
than scored 0; so is a network that applies no recognised activation at all.

Plain SWAP is implemented. The paper's regularised variant multiplies by
exp(−(params − μ)²/σ) with μ, σ tuned per search space and budget; those are not defined for
an arbitrary space, so das leaves regularisation to the search (a budget constraint, or an
ensemble with ``params``).

The patterns are packed into int64 words (64 images per word) during the shared labelled
forward, so memory stays at 8 bytes per unit per 64 images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from das.errors import DasError
from das.proxies.activations import SeenInputs, codes, no_activation_error
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


@register_tap("relu_patterns")  # the need keeps its first name; it reads every activation, not only ReLUs
class ActivationPatterns(Tap):
    """Packed patterns of every unit of every activation applied to a 4-D input."""

    activations = True

    def install(self, model: nn.Module, x: torch.Tensor) -> list[Any]:
        self.words: list[torch.Tensor] = []
        self.calls = 0
        # An input already read repeats its patterns, which cannot change the count.
        self._seen = SeenInputs()
        return []

    def on_activation(self, pre: torch.Tensor) -> None:
        self.calls += 1
        if pre.dim() != 4 or self._seen.get(pre) is not None:
            return
        self._seen.add(pre)
        self.words.append(pack_patterns(codes(pre)))

    def close(self) -> None:
        self._seen.clear()


def count_patterns(words: list[torch.Tensor]) -> int:
    if not words:
        return 0
    packed = torch.cat(words)
    if packed.shape[1] == 1:
        return int(torch.unique(packed[:, 0]).numel())
    return int(torch.unique(packed, dim=0).shape[0])


@register_proxy("swap", needs={"relu_patterns"})
def swap(ctx: ScoringContext) -> float:
    """Number of distinct activation patterns of the convolutional units over the first probe batch."""
    tap: Any = ctx.tap("relu_patterns")
    if not tap.calls:
        raise no_activation_error("swap", ctx.model)
    if not tap.words:
        raise DasError(
            f"swap counts the activation patterns of convolutional units (activations on 4-D B×C×H×W maps), but "
            f"{type(ctx.model).__name__} applies its activations only to lower-dimensional tensors (an MLP or a transformer); "
            f"score it with nwot or another proxy"
        )
    return float(count_patterns(tap.words))
