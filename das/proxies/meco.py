"""``meco``: MeCo, the smallest eigenvalue of each layer's channel correlation, summed.

Jiang et al., "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via Minimum
Eigenvalue of Correlation", NeurIPS 2023 (eq. 6). For one input image and every layer i with a
C_i×H_i×W_i feature map f_i, P(f_i) is the C_i×C_i Pearson correlation matrix of the channels
(each channel's H_i·W_i values are its observations) and

    meco = Σ_i λ_min(P(f_i))

Exact variant (the authors' NAS-Bench-201 code, plain ``meco``, not the channel-sampling
``meco_opt``): a channel that is constant on the image has no correlation (NaN), set to 0;
outputs that are not 4-D maps (linear layers, logits) add 0, as their NaN matrices do there.

Layers: the authors hook every module of ``named_modules()``, so a map is counted once per
container that returns it unchanged (a conv-BN block's output three times, via the BN, the
Sequential and the block). das counts every *distinct* 4-D output tensor once — each
convolution, normalisation, activation and pooling output and each sum a block returns — so
the score does not depend on how the model nests its modules.

Adaptation (fusion): the authors feed a single image, so their BatchNorm normalises that image
alone. das reads the first image of the shared labelled forward (BatchNorm normalises over the
probe batch) and needs no pass of its own. Pearson correlation ignores a per-channel affine
map, so the two agree at a BatchNorm output and differ only downstream of a nonlinearity.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from das.proxies.base import register_proxy
from das.proxies.context import ScoringContext, Tap, register_tap


def min_correlation_eigenvalue(feature: torch.Tensor) -> float:
    """λ_min of the channel correlation of one C×H×W map (constant channels' entries set to 0)."""
    if feature[0].numel() < 2:  # one observation per channel: no correlation at all, so 0
        return 0.0
    channels = feature.shape[0]
    # corrcoef returns a 0-d tensor for one channel: as a 1×1 matrix, λ_min is that channel's self-correlation, 1.
    corr = torch.corrcoef(feature.flatten(1).double()).reshape(channels, channels)
    corr = torch.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)
    return float(torch.linalg.eigvalsh(corr)[0])


@register_tap("meco")
class MecoTap(Tap):
    """λ_min of the channel correlation of every distinct 4-D module output, on the first image."""

    def install(self, model: nn.Module, x: torch.Tensor) -> list[Any]:
        self.values: list[float] = []
        # id -> weak reference: an id seen again belongs to the same tensor only while it lives.
        self._seen: dict[int, weakref.ref] = {}
        return [m.register_forward_hook(self._on_output) for m in model.modules()]

    def _on_output(self, _m: nn.Module, _inputs: tuple, out: Any) -> None:
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            return
        known = self._seen.get(id(out))
        if known is not None and known() is out:
            return
        self._seen[id(out)] = weakref.ref(out)
        self.values.append(min_correlation_eigenvalue(out[0].detach()))

    def close(self) -> None:
        self._seen = {}


@register_proxy("meco", needs={"meco"})
def meco(ctx: ScoringContext) -> float:
    """Σ over distinct feature maps of λ_min of the channel correlation on the first probe image."""
    tap: Any = ctx.tap("meco")
    return float(sum(tap.values))
