"""Masks that stay fixed through training, and per-layer density reports.

:func:`apply_masks` registers a ``torch.nn.utils.parametrize`` parametrization on each masked
weight, so ``module.weight`` is always ``original ⊙ mask`` — every forward, whatever an
optimiser, a scheduler or ``load_state_dict`` did to ``original`` — and zeroes ``original``
where the mask is 0. The gradient there is then 0, and so are SGD's weight-decay term
(``wd · 0``), its momentum buffer and Adam's moments, so ``original`` itself stays exactly zero
too. The ``original`` parameter is the same object as the weight was, so an optimiser built
before the masks keeps working.

Checkpoints: the mask is a buffer of the parametrization, saved in the state dict as
``<layer>.parametrizations.weight.0.mask`` next to ``<layer>.parametrizations.weight.original``.
To load one, build the model, ``apply_masks(model, masks_from_state_dict(state))``, then
``model.load_state_dict(state)`` (strict). :func:`remove_masks` bakes the zeros into plain
weights (for export, or a model whose state dict must have the usual keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from das.errors import DasError, close_matches_hint
from das.nets.weights import prunable_weights

_SUFFIX = ".parametrizations.weight.0.mask"


class WeightMask(nn.Module):
    """The parametrization ``w ↦ w ⊙ mask``; the mask is a buffer (saved, moved with the model)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Zero the pruned weights and keep them zero: one :class:`WeightMask` per masked weight.

    Args:
        model: the network; modified in place (and returned).
        masks: ``{"<layer>.weight": mask}``, bool or 0/1 floats of the weight's shape, as
            :func:`das.prune.prune_at_init` returns; a prunable weight without a key stays dense.
            A weight already masked gets the new mask in place of the old one.
    """
    known = _masked_or_prunable(model)
    checked = {name: _checked(name, mask, known) for name, mask in masks.items()}
    for name, mask in checked.items():
        module = model.get_submodule(name.rpartition(".")[0])
        current = _mask_of(module)
        weight = module.parametrizations.weight.original if current is not None else module.weight
        mask = mask.to(device=weight.device, dtype=weight.dtype)
        if current is not None:
            current.mask = mask
        else:
            parametrize.register_parametrization(module, "weight", WeightMask(mask))
        with torch.no_grad():
            module.parametrizations.weight.original.mul_(mask)
    return model


def remove_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Bake every applied mask into its weight (zeros stay, nothing keeps them so); return the masks as bool."""
    removed: dict[str, torch.Tensor] = {}
    for name, module in list(model.named_modules()):
        holder = _mask_of(module)
        if holder is None:
            continue
        if len(module.parametrizations.weight) != 1:
            raise DasError(f"{name}.weight carries other parametrizations besides its mask; remove them first")
        removed[f"{name}.weight" if name else "weight"] = holder.mask.detach() != 0
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return removed


def applied_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The bool masks :func:`apply_masks` put on ``model`` (``{}`` when none)."""
    return {
        f"{name}.weight" if name else "weight": holder.mask.detach() != 0
        for name, module in model.named_modules()
        if (holder := _mask_of(module)) is not None
    }


def masks_from_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The masks saved in a masked model's state dict, ready for :func:`apply_masks` before loading it."""
    return {key[: -len(_SUFFIX)] + ".weight": value != 0 for key, value in state.items() if key.endswith(_SUFFIX)}


def density_report(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> list[dict[str, Any]]:
    """One row per prunable layer, then an ``overall`` row: name, shape, kept, total, density.

    Args:
        model: the network.
        masks: the masks to report (default: those applied to the model); a prunable weight
            without a mask counts as dense.
    """
    known = _masked_or_prunable(model)
    masks = applied_masks(model) if masks is None else {n: _checked(n, m, known) for n, m in masks.items()}
    rows: list[dict[str, Any]] = []
    for name, shape in known.items():
        total = shape.numel()
        kept = int(masks[name].count_nonzero()) if name in masks else total
        rows.append({"name": name, "shape": tuple(shape), "kept": kept, "total": total, "density": kept / total})
    kept, total = sum(r["kept"] for r in rows), sum(r["total"] for r in rows)
    rows.append({"name": "overall", "shape": None, "kept": kept, "total": total, "density": kept / total if total else 1.0})
    return rows


def _mask_of(module: nn.Module) -> WeightMask | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return next((p for p in module.parametrizations.weight if isinstance(p, WeightMask)), None)


def _masked_or_prunable(model: nn.Module) -> dict[str, torch.Size]:
    """The shape of every prunable weight, masked or not, in ``named_modules()`` order."""
    return {name: w.shape for name, w in prunable_weights(model).items()}


def _checked(name: str, mask: torch.Tensor, known: Mapping[str, torch.Size]) -> torch.Tensor:
    if name not in known:
        raise DasError(f"no prunable weight {name!r} in this model: {close_matches_hint(name, known)}")
    if not isinstance(mask, torch.Tensor) or mask.shape != known[name]:
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise DasError(f"mask for {name!r} has shape {got}, the weight has {tuple(known[name])}")
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
        raise DasError(f"mask for {name!r} must be bool or hold only 0 and 1")
    return mask
