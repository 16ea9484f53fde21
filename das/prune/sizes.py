"""Sizes of a network pruned at initialisation: the parameters and FLOPs its non-zero weights leave.

A masked network keeps every tensor at its dense shape, so :func:`das.stats.count_params` and
:func:`das.stats.count_flops` count it as dense. What a pruning table reports is what the masks
remove: every pruned weight is a parameter less, and a multiply-add less at every position the
layer is applied to (each output pixel of a convolution, each row of a linear layer). Those are
the FLOPs a sparse kernel would execute; a dense kernel still runs all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from das.nets.masks import density_report
from das.prune.slim import NetworkSize
from das.stats import count_flops, count_params


def masked_size(model: nn.Module, masks: Mapping[str, torch.Tensor], input_size: tuple[int, ...]) -> tuple[NetworkSize, NetworkSize]:
    """``(dense, pruned)`` sizes of ``model`` under ``masks`` on one input of ``input_size``.

    ``pruned`` counts the trainable parameters less the pruned weights, and the dense FLOPs
    less 2 FLOPs (one multiply-add) per pruned weight per position its layer is applied to.
    """
    positions = _positions(model, list(masks), tuple(input_size))
    dense = NetworkSize(count_params(model), count_flops(model, tuple(input_size)))
    removed = {name: int(mask.numel() - mask.count_nonzero()) for name, mask in masks.items()}
    return dense, NetworkSize(dense.params - sum(removed.values()), dense.flops - sum(2 * n * positions[k] for k, n in removed.items()))


def _positions(model: nn.Module, names: list[str], input_size: tuple[int, ...]) -> dict[str, int]:
    """How many times each named weight's layer applies its whole weight in one forward pass of one input."""
    counts = dict.fromkeys(names, 0)
    handles = []
    for name in names:
        module = model.get_submodule(name.rpartition(".")[0])
        out_dim = 1 if isinstance(module, nn.modules.conv._ConvNd) else -1  # channels of a conv, features of a linear

        def hook(_m: nn.Module, _inputs: Any, out: torch.Tensor, name: str = name, dim: int = out_dim) -> None:
            counts[name] += out.numel() // out.shape[dim]

        handles.append(module.register_forward_hook(hook))
    param = next(model.parameters(), None)
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size, device=param.device if param is not None else None))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return counts


def density_section(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Per-layer and overall density and sparsity (for prune_results.json), with the count of layers left empty.

    ``empty_layers`` is 0 whenever das's pruner chose the masks (it keeps one weight per layer):
    it is there so a table can show it, the layer collapse that data-free one-shot methods risk.
    """
    rows = density_report(model, masks)
    layers = [{"name": r["name"], "shape": list(r["shape"]), "kept": r["kept"], "total": r["total"],
               "density": r["density"], "sparsity": 1.0 - r["density"]} for r in rows[:-1]]
    overall = rows[-1]
    return {
        "overall": {"kept": overall["kept"], "total": overall["total"], "density": overall["density"], "sparsity": 1.0 - overall["density"]},
        "min_layer_density": min((r["density"] for r in layers), default=1.0),
        "empty_layers": sum(r["kept"] == 0 for r in layers),
        "layers": layers,
    }
