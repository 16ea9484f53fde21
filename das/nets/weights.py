"""Which weights proxies score and masks cover: every convolution and linear weight, the classifier included.

The classifier is pruned like every other layer, as in the protocols das compares with (SNIP,
SynFlow and PX prune all conv and linear weights, the last layer included); the pruner keeps at
least one weight in each layer, and a user who wants a dense classifier can apply a mask
without its key. Biases and normalisation parameters are never masked: they are a tiny share
of the parameters and the papers leave them dense.
"""

from __future__ import annotations

import torch
from torch import nn


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose weights gradient-based proxies score: convolutions and linear layers."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and isinstance(getattr(m, "weight", None), torch.Tensor)
    ]


def prunable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<layer>.weight": weight}`` for every conv/linear layer, in ``named_modules()`` order.

    A weight shared by several layers (tied embeddings) appears once, under its first name, as
    in ``named_parameters()``.
    """
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for name, module in prunable_layers(model):
        weight = module.weight
        if id(weight) in seen:
            continue
        seen.add(id(weight))
        out[f"{name}.weight" if name else "weight"] = weight
    return out
