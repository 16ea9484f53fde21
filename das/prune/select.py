"""Turning scores into masks: exact keep counts, deterministic ties, never an empty layer.

The pruner keeps exactly ``round(density · N)`` of the ``N`` prunable weights at every round, so
the final density is the request up to half a weight. Ties at the threshold are broken by
position (earlier layer in ``named_modules()`` order first, then lower flat index), through a
stable sort, so a run is reproducible whatever the scores' ties. Only weights that are still
kept compete: a pruned weight never comes back, so the masks of an iterative run are nested.

Never an empty layer: in a global ranking, every layer first reserves its best-scored kept
weight, and the remaining ``k − L`` places go to the best of the rest (this is the same set
as "global top-k, then give each emptied layer its best weight in place of the lowest kept
ones"). In a layer-wise ranking each layer keeps ``density · n_l`` weights rounded by largest
remainder (Hamilton's method) so that the counts still add up to ``k``, and at least one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch


def exponential_schedule(density: float, rounds: int) -> list[float]:
    """``d_k = density^(k/rounds)`` for k = 1..rounds (Tanaka et al., NeurIPS 2020, Algorithm 1)."""
    return [density ** (k / rounds) for k in range(1, rounds + 1)]


def keep_count(total: int, density: float) -> int:
    """How many of ``total`` weights a density keeps (nearest integer)."""
    return int(round(density * total))


def select(
    scores: Mapping[str, torch.Tensor], alive: Mapping[str, torch.Tensor], density: float, scope: str
) -> dict[str, torch.Tensor]:
    """The new bool masks: the best ``round(density · N)`` of the weights ``alive`` keeps.

    Args:
        scores: a finite score for every kept weight (pruned entries are ignored).
        alive: the current bool masks; the result is a subset of them.
        density: the fraction of all prunable weights to keep after this round.
        scope: ``"global"`` (one ranking over all layers) or ``"layer"`` (one per layer).
    """
    names = list(alive)
    totals = [alive[n].numel() for n in names]
    k = max(keep_count(sum(totals), density), len(names))
    if scope == "layer":
        counts = apportion([density * t for t in totals], [int(alive[n].sum()) for n in names], k)
        return {n: _top(scores[n], alive[n], c) for n, c in zip(names, counts)}
    flat = []
    reserved = []
    for n in names:
        s = _ranked(scores[n], alive[n])
        best = int(torch.argmax(s))  # the first maximum: ties go to the lower index
        reserved.append(best)
        s[best] = -math.inf
        flat.append(s)
    everything = torch.cat(flat)
    order = torch.sort(everything, descending=True, stable=True).indices[: k - len(names)]
    keep = torch.zeros_like(everything, dtype=torch.bool)
    keep[order] = True
    out: dict[str, torch.Tensor] = {}
    start = 0
    for n, best in zip(names, reserved):
        size = alive[n].numel()
        mask = keep[start : start + size].clone()
        mask[best] = True
        out[n] = mask.view(alive[n].shape)
        start += size
    return out


def apportion(quotas: list[float], caps: list[int], k: int) -> list[int]:
    """Integer counts near ``quotas`` that sum to ``k``, each in ``[1, cap]`` (largest remainder)."""
    counts = [min(max(math.floor(q), 1), c) for q, c in zip(quotas, caps)]
    while sum(counts) < k:
        free = [i for i, c in enumerate(counts) if c < caps[i]]
        if not free:
            break  # every layer full: cannot happen while densities only decrease
        counts[max(free, key=lambda i: (quotas[i] - counts[i], -i))] += 1
    while sum(counts) > k:
        spare = [i for i, c in enumerate(counts) if c > 1]
        if not spare:
            break  # fewer places than layers: the caller refuses such densities up front
        counts[min(spare, key=lambda i: (quotas[i] - counts[i], i))] -= 1
    return counts


def _ranked(score: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Flat float64 scores with every pruned weight at −∞, so it never ranks above a kept one."""
    s = score.detach().to(torch.float64).flatten()
    return torch.where(alive.flatten().to(s.device), s, torch.full_like(s, -math.inf))


def _top(score: torch.Tensor, alive: torch.Tensor, count: int) -> torch.Tensor:
    order = torch.sort(_ranked(score, alive), descending=True, stable=True).indices[:count]
    mask = torch.zeros(alive.numel(), dtype=torch.bool, device=alive.device)
    mask[order.to(alive.device)] = True
    return mask.view(alive.shape)
