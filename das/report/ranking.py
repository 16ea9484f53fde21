"""Ranks within a population: correlation with ground truth and the AZ-NAS log-rank ensemble.

Zero-cost proxies live on incomparable scales (a parameter count, a log-determinant, a distance),
so they are combined through ranks, never raw values. The reference rule is the non-linear
ranking aggregation of AZ-NAS (Lee & Ham, "AZ-NAS: Assembling Zero-Cost Proxies for Network
Architecture Search", CVPR 2024): with ``m`` architectures and ``rank_k(a)`` the rank of ``a``
under proxy ``k`` (1 = worst, m = best),

    ensemble(a) = Σ_k log(rank_k(a) / m).

The log punishes an architecture that one proxy ranks near the bottom much more than a linear
sum of ranks would, so a candidate must be good under every member, not excellent under one.
Ties get their average rank (``scipy.stats.rankdata``'s default, which AZ-NAS's released code
uses: ``np.log(stats.rankdata(score) / m)`` summed over proxies).

Ranks are relative to a population: here, the architectures passed in. A non-finite member
score (a proxy that failed or overflowed on that architecture) is ranked below every finite one
(ties among the failures share the average of the bottom ranks), so the ensemble is defined for
every architecture and a failing candidate cannot win. Nothing here sees an accuracy: the
members are chosen by name and the rule has no fitted weights.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from das.errors import DasError


def average_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..m, higher value → higher rank, ties averaged; non-finite values rank lowest."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1:
        raise DasError(f"ranks need a 1-D sequence of scores, got shape {v.shape}")
    v = np.where(np.isfinite(v), v, -np.inf)  # NaN would poison rankdata; failures go last
    return stats.rankdata(v, method="average")


def log_rank_ensemble(population: Sequence[Mapping[str, float]], members: Sequence[str]) -> np.ndarray:
    """AZ-NAS aggregation Σ_k log(rank_k / m) of ``members`` over a population of score dicts.

    Args:
        population: one ``{proxy: score}`` dict per architecture (higher score = better);
            a missing or non-finite score counts as a failure and ranks lowest.
        members: the proxies to aggregate (at least one).

    Returns:
        One ensemble score per architecture, ≤ 0, higher is better (0: best under every member).
    """
    if not members:
        raise DasError("an ensemble needs at least one member proxy, e.g. --ensemble synflow,jacov,nwot")
    if len(set(members)) != len(members):
        raise DasError(f"ensemble members {list(members)} repeat a proxy; list each once")
    m = len(population)
    total = np.zeros(m)
    if m == 0:
        return total
    for name in members:
        column = [float(scores.get(name, math.nan)) for scores in population]
        total += np.log(average_ranks(column) / m)
    return total


def ensemble_name(members: Sequence[str]) -> str:
    """The name an ensemble is reported under, e.g. ``ensemble(synflow+jacov+nwot)``."""
    return "ensemble(" + "+".join(members) + ")"


def rank_correlation(scores: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """Spearman ρ and Kendall τ-b between proxy scores and ground truth, over finite scores.

    Architectures whose score is not finite are left out here (the caller counts them as
    failures); ``n`` says how many pairs were used. A coefficient that is undefined (fewer than
    two pairs, or a constant column) is ``None`` rather than NaN, so the result stays valid JSON.
    """
    x = np.asarray(scores, dtype=float)
    y = np.asarray(truth, dtype=float)
    if x.shape != y.shape:
        raise DasError(f"{len(x)} scores but {len(y)} accuracies; they must pair up one to one")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out: dict[str, float | int | None] = {"spearman": None, "kendall": None, "n": int(keep.sum())}
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = stats.spearmanr(x, y).statistic
        tau = stats.kendalltau(x, y).statistic
    out["spearman"] = None if not np.isfinite(rho) else float(rho)
    out["kendall"] = None if not np.isfinite(tau) else float(tau)
    return out


def partial_rank_correlation(
    scores: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray, control: Sequence[float] | np.ndarray
) -> dict[str, float | int | None]:
    """Spearman ρ of ``scores`` with ``truth`` once ``control`` (e.g. log params) is held fixed.

    Size decides most of a network's accuracy, so a proxy that only tracks size reaches a high
    plain ρ. The partial rank correlation asks what a proxy knows beyond size: with Spearman
    coefficients r between the three rank columns,
    ``ρ_xy·z = (r_xy − r_xz r_yz) / √((1 − r_xz²)(1 − r_yz²))``; a proxy that is a function of
    the control alone scores 0. Non-finite rows are left out; ``None`` where undefined.
    """
    x, y, z = (np.asarray(v, dtype=float) for v in (scores, truth, control))
    if not x.shape == y.shape == z.shape:
        raise DasError(f"{len(x)} scores, {len(y)} accuracies and {len(z)} controls must pair up one to one")
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    out: dict[str, float | int | None] = {"spearman": None, "n": int(keep.sum())}
    r_xy, r_xz, r_yz = (rank_correlation(a[keep], b[keep])["spearman"] for a, b in ((x, y), (x, z), (y, z)))
    if r_xy is None or r_xz is None or r_yz is None:
        return out
    # |r| = 1 (to rounding: spearmanr gives 1 − 4e-16 for a column ranked against its own log) when
    # the score (or the truth) is a monotone function of the control.
    if max(abs(r_xz), abs(r_yz)) > 1 - 1e-9:
        out["spearman"] = 0.0 if abs(r_xz) > 1 - 1e-9 else None
        return out
    denominator = math.sqrt((1 - r_xz**2) * (1 - r_yz**2))
    out["spearman"] = float((r_xy - r_xz * r_yz) / denominator)
    return out


def within_bins_correlation(
    scores: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray, control: Sequence[float] | np.ndarray,
    bins: int = 4,
) -> dict[str, Any]:
    """Spearman ρ inside each of ``bins`` equal-count bins of ``control`` (e.g. params quartiles).

    What a user feels inside one size budget: ranking candidates of about the same size. Returns
    the per-bin ρ (low to high control) and their mean over the bins where ρ is defined.
    """
    x, y, z = (np.asarray(v, dtype=float) for v in (scores, truth, control))
    order = np.argsort(z, kind="stable")
    per_bin = [rank_correlation(x[idx], y[idx])["spearman"] for idx in np.array_split(order, bins)]
    defined = [r for r in per_bin if r is not None]
    return {"per_bin": per_bin, "mean": float(np.mean(defined)) if defined else None, "bins": bins}
