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
