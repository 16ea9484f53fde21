"""Pruning at initialisation: score, keep the best, repeat on the masked network.

``prune_at_init(model, "px", 0.05, batches)`` returns one bool mask per prunable weight (every
conv and linear weight, the classifier included: see :mod:`das.nets.weights`) keeping
exactly ``round(0.05 · N)`` of the ``N`` weights, at least one in every layer
(:mod:`das.prune.select`). Iterative methods (``px``, ``synflow``: 100 rounds by default)
re-score the masked network at each of ``rounds`` steps of the exponential schedule
``d_k = density^(k/rounds)`` (Tanaka et al., NeurIPS 2020), which is what lets data-free
SynFlow avoid layer collapse and what PX inherits; one-shot methods score once. The model is
left exactly as it was: apply the masks with :func:`das.nets.masks.apply_masks`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from das.errors import DasError, close_matches_hint
from das.proxies.state import preserved
from das.prune.registry import SALIENCIES, Batch, Saliency, ScoringInputs
from das.prune.select import exponential_schedule, keep_count, select
from das.nets.weights import prunable_weights

SCOPES = ("global", "layer")


def prune_at_init(
    model: nn.Module,
    method: str,
    density: float,
    batches: Iterable[Any] | None = None,
    *,
    rounds: int | None = None,
    scope: str = "global",
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Masks that keep the fraction ``density`` of the prunable weights, chosen by ``method``.

    The prunable weights are every convolution and linear weight, the classifier included: the
    protocols das compares with (SNIP, SynFlow, PX) prune it too, and the one-weight-per-layer
    floor keeps it connected. Leave a layer dense by dropping its key before ``apply_masks``.

    Args:
        model: the network at initialisation (or trained: PX and SNIP read its current weights);
            left unchanged.
        method: a registered saliency method: ``px``, ``snip``, ``synflow``, ``magnitude``, ``random``.
        density: the fraction of prunable weights kept, strictly between 0 and 1.
        batches: probe batches ``(x, y)`` (``y`` may be None, or ``x`` alone, for methods that
            read no labels), moved to the model's device; required by ``px`` and ``snip``. Every
            round reads all of them, so pass a few, not a whole data loader.
        rounds: pruning rounds of the exponential schedule; default: the method's own (px and
            synflow 100, the others 1).
        scope: ``global`` (one ranking over all layers) or ``layer`` (each layer keeps ``density``).
        seed: seeds ``random`` and the forward passes of ``snip``.
        input_shape: one input's shape for data-free methods called without batches.
        progress: show a tqdm bar over the rounds (PX's 100 rounds take a minute on a CPU).

    Returns:
        ``{"<layer>.weight": bool mask}`` for every prunable weight, on its device.

    Raises:
        DasError: for a bad density, method, scope or rounds, a data-dependent method without
            batches, or a density too low to keep one weight in every layer.
    """
    saliency = SALIENCIES.get(method)
    density = check_density(density)
    if scope not in SCOPES:
        raise DasError(f"unknown pruning scope {scope!r}: {close_matches_hint(str(scope), SCOPES)}")
    rounds = saliency.rounds if rounds is None else rounds
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise DasError(f"rounds must be a positive integer (pruning rounds of the exponential schedule); got {rounds!r}")
    weights = _unmasked_weights(model)
    total = sum(w.numel() for w in weights.values())
    if keep_count(total, density) < len(weights):
        raise DasError(
            f"density {density:g} keeps {keep_count(total, density)} of {total} weights, fewer than one for each of the "
            f"{len(weights)} prunable layers; use a density of at least {len(weights) / total:.3g}"
        )
    masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    inputs = _inputs(model, saliency, batches, input_shape, seed)
    schedule = exponential_schedule(density, rounds)
    if progress and rounds > 1:
        from tqdm.auto import tqdm  # Lightning's own progress-bar library

        schedule = tqdm(schedule, desc=f"{method} rounds", unit="round", dynamic_ncols=True)
    with preserved(model):
        for d in schedule:
            masks = select(_scores(saliency, inputs, masks), masks, d, scope)
    return masks


def saliency_scores(
    model: nn.Module,
    method: str,
    batches: Iterable[Any] | None = None,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
) -> dict[str, torch.Tensor]:
    """One round of ``method``'s scores on the network ``masks`` describe (default: dense); model unchanged.

    For analysis and tests: ``prune_at_init`` calls the same function once per round.
    """
    saliency = SALIENCIES.get(method)
    weights = _unmasked_weights(model)
    current = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    for name, mask in (masks or {}).items():
        if name not in current:
            raise DasError(f"no prunable weight {name!r}: {close_matches_hint(name, current)}")
        current[name] = mask.to(device=current[name].device, dtype=torch.bool)
    with preserved(model):
        return _scores(saliency, _inputs(model, saliency, batches, input_shape, seed), current)


def check_density(density: Any) -> float:
    """``density`` as a float in (0, 1), or a one-line DasError saying what is accepted."""
    if isinstance(density, bool) or not isinstance(density, numbers.Real) or not (math.isfinite(density) and 0 < density < 1):
        raise DasError(f"density must be a number strictly between 0 and 1 (the fraction of weights kept, e.g. 0.05); got {density!r}")
    return float(density)


def _scores(saliency: Saliency, inputs: ScoringInputs, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The method's scores on the masked network: pruned weights zeroed in place (the caller restores them)."""
    weights = prunable_weights(inputs.model)
    with torch.no_grad():
        for name, mask in masks.items():
            weights[name].mul_(mask)
    scores = saliency.fn(ScoringInputs(inputs.model, masks, inputs.batches, inputs.input_shape, inputs.generator, inputs.seed))
    for name, mask in masks.items():
        s = scores.get(name)
        if s is None or s.shape != mask.shape:
            raise DasError(f"pruning method {saliency.name!r} gave no score of shape {tuple(mask.shape)} for {name!r}; this is a bug in the method")
        if not torch.isfinite(s[mask.to(s.device)]).all():
            raise DasError(f"pruning method {saliency.name!r} gave non-finite scores in {name!r}; das treats this as a bug, please report it")
    return scores


def _inputs(model: nn.Module, saliency: Saliency, batches: Iterable[Any] | None, input_shape: tuple[int, ...] | None, seed: int) -> ScoringInputs:
    """Validated probe batches on the model's device, the input shape and the seeded generator."""
    probe = _probe(batches, model)
    if saliency.needs_data and not probe:
        raise DasError(f"pruning method {saliency.name!r} scores weights on real inputs; pass batches=[(x, y), ...] (a few probe batches)")
    if saliency.needs_labels and any(y is None for _, y in probe):
        raise DasError(f"pruning method {saliency.name!r} needs labels (a loss on the batches); pass batches as (x, y) pairs")
    if probe:
        input_shape = tuple(probe[0][0].shape[1:])
    elif input_shape is None:
        raise DasError(f"pruning method {saliency.name!r} needs the shape of one input; pass batches= or input_shape=(3, 32, 32)")
    return ScoringInputs(model, {}, probe, tuple(input_shape), torch.Generator().manual_seed(seed), seed)


def _probe(batches: Iterable[Any] | None, model: nn.Module) -> list[Batch]:
    if batches is None:
        return []
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    probe: list[Batch] = []
    for item in batches:
        if isinstance(item, torch.Tensor) and not (item.dim() == 1 and not item.is_floating_point()):
            probe.append((item.to(device), None))
        elif _is_pair(item):
            probe.append((item[0].to(device), None if item[1] is None else item[1].to(device)))
        else:
            what = "a 1-D integer tensor (labels?)" if isinstance(item, torch.Tensor) else f"an item of type {type(item).__name__}"
            raise DasError(f"batches must be a list of (x, y) pairs or input tensors; got {what} (wrap one batch as [(x, y)])")
    return probe


def _is_pair(item: Any) -> bool:
    """An ``(x, y)`` batch: inputs and labels (or None)."""
    return (
        isinstance(item, (tuple, list))
        and len(item) == 2
        and isinstance(item[0], torch.Tensor)
        and (item[1] is None or isinstance(item[1], torch.Tensor))
    )


def _unmasked_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    weights = prunable_weights(model)
    if not weights:
        raise DasError(f"{type(model).__name__} has no convolution or linear layer, so there is nothing to prune")
    masked = [name for name in weights if parametrize.is_parametrized(_module(model, name), "weight")]
    if masked:
        raise DasError(f"{masked[0]!r} already carries a mask; call das.prune.remove_masks(model) before pruning again")
    return weights


def _module(model: nn.Module, weight_name: str) -> nn.Module:
    return model.get_submodule(weight_name.rpartition(".")[0])
