"""Report how each proxy orders a few distilled calibration students, and plot the rule chosen on them.

The rule a calibrated search ranks by is chosen by :func:`das.calibrate.selection.fit_selection`
(cross-validated regret on the calibration students). This module writes down what a user wants
to see beside it: every proxy's Kendall τ with the distilled accuracies (Kendall 1938, "A new
measure of rank correlation", Biometrika 30; τ-b, which counts ties, as ``scipy.stats.kendalltau``
computes it), and a plot of the chosen rule's value against each student's distilled accuracy.
Every proxy is "higher is better" (see :mod:`das.proxies.base`), so τ > 0 is the good sign.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

@dataclass(frozen=True)
class ProxyRank:
    """One proxy's agreement with distilled accuracy.

    Attributes:
        proxy: the registered name.
        tau: Kendall τ-b between its scores and the accuracies (nan when either is constant).
        p_value: the two-sided p-value of τ = 0.
        n: students with a finite score (a proxy that failed on a student skips it).
    """

    proxy: str
    tau: float
    p_value: float
    n: int


def kendall(scores: Sequence[float], accuracy: Sequence[float]) -> tuple[float, float, int]:
    """Kendall τ-b, its p-value and n over the students whose score is finite (nan, nan, n if undefined)."""
    x, y = np.asarray(scores, dtype=float), np.asarray(accuracy, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    n = int(keep.sum())
    if n < 2:
        return math.nan, math.nan, n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input gives nan with a warning; nan says it
        result = kendalltau(x[keep], y[keep])
    return float(result.statistic), float(result.pvalue), n


def rank_proxies(scores: Mapping[str, Sequence[float]], accuracy: Sequence[float]) -> list[ProxyRank]:
    """Every proxy's τ with ``accuracy``, highest first (nan last; ties in the order given)."""
    ranks = [ProxyRank(name, *kendall(values, accuracy)) for name, values in scores.items()]
    return sorted(ranks, key=lambda r: -r.tau if math.isfinite(r.tau) else math.inf)


# --------------------------------------------------------------------------- writing it down


def write_ranking(ranking: Sequence[ProxyRank], path: str | Path) -> None:
    """``proxy,tau,p_value,n``, highest τ first (an empty cell for an undefined τ)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["proxy", "tau", "p_value", "n"])
        for r in ranking:
            writer.writerow([r.proxy, _cell(r.tau), _cell(r.p_value), r.n])
    tmp.replace(path)


def _fmt(value: float) -> str:
    return f"{value:+.3f}" if math.isfinite(value) else "undefined"


def _cell(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else ""


def plot_calibration(objective: Sequence[float], accuracy: Sequence[float], title: str, path: str | Path) -> None:
    """Each calibration student's value under the chosen rule (x) against its distilled accuracy (y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = np.asarray(objective, dtype=float), np.asarray(accuracy, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(x[keep], y[keep], color="tab:blue")
    tau = kendall(x, y)[0]
    ax.set_xlabel("the chosen rule's value (higher: predicted to distil better)")
    ax.set_ylabel("distilled accuracy on validation, %")
    ax.set_title(f"{title}\n{int(keep.sum())} calibration students, Kendall τ {_fmt(tau)}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
