"""Rank zero-cost proxies by how well they order students by distilled accuracy, and pick one.

A proxy is worth searching with on a space only if, on that space, with that teacher and data,
the students it scores higher distil to higher accuracy. Given a few students actually distilled
(their accuracies) and every proxy's score of each, :func:`rank_proxies` gives each proxy's
Kendall τ with the accuracies (Kendall 1938, "A new measure of rank correlation", Biometrika
30; τ-b, which counts ties, as ``scipy.stats.kendalltau`` computes it), and
:func:`choose_proxy` picks the proxy with the highest τ only if it beats a baseline (``params``,
"the bigger network") by more than the noise of so few students:

    margin = (5% / m)-quantile, over bootstrap resamples of the students, of τ(best) − τ(baseline)

where m is the number of proxies the best was picked from, and the best proxy is chosen only
when ``margin > 0``: it ranks better than the baseline in all but 5%/m of resamples. The 5% is
split over the m proxies (Bonferroni) because the best of many proxies on a few students beats
the baseline by luck more often than any one fixed proxy does: with 18 proxies on 6 students
distilled for one epoch, one of them reached τ = 1 against τ = 0 for params, and its plain 5th
percentile was +0.22. Otherwise the caller's configured proxy is kept and the reason is said.
With few students the margin is rarely positive: that is the honest answer.

Every proxy is "higher is better" (see :mod:`das.proxies.base`), so τ > 0 is the good sign.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

#: The proxy a chosen one must beat: a network's size, free and hard to beat within a space.
BASELINE = "params"
#: Bootstrap resamples of the students for the margin (2,000 leave ~6 below the 0.3% quantile of 17 proxies).
RESAMPLES = 2000
#: The family-wise quantile: split over the m proxies compared, the best must beat the baseline in 1 − QUANTILE / m of resamples.
QUANTILE = 0.05


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


@dataclass(frozen=True)
class Choice:
    """Which proxy to search with, and why.

    Attributes:
        proxy: the proxy to search with: ``best`` if it beat the baseline, else the fallback.
        best: the proxy with the highest τ other than the baseline (None if none has a finite τ).
        tau_best: its τ.
        baseline: the proxy it had to beat.
        tau_baseline: the baseline's τ.
        margin: the bootstrap ``quantile`` of τ(best) − τ(baseline) (nan when undefined).
        quantile: QUANTILE / m, m the proxies compared.
        beats: whether ``margin > 0``.
        fallback: the configured proxy, kept when ``beats`` is False.
        students: how many students the ranking is over.
        reason: one sentence saying what was chosen and why.
    """

    proxy: str
    best: str | None
    tau_best: float
    baseline: str
    tau_baseline: float
    margin: float
    quantile: float
    beats: bool
    fallback: str
    students: int
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


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


def bootstrap_margin(a: Sequence[float], b: Sequence[float], accuracy: Sequence[float], resamples: int = RESAMPLES,
                     quantile: float = QUANTILE, seed: int = 0) -> float:
    """The ``quantile`` of τ(a) − τ(b) over bootstrap resamples of the students (nan if too few are defined).

    Each resample draws the students with replacement; a repeated student is a tie, which τ-b
    counts. A proxy constant on a resample ranks nothing there: its τ counts as 0. Resamples whose
    accuracies are all equal rank nothing at all and are left out; if more than half are, the
    margin is nan.
    """
    a, b, acc = (np.asarray(v, dtype=float) for v in (a, b, accuracy))
    keep = np.isfinite(a) & np.isfinite(b) & np.isfinite(acc)
    a, b, acc = a[keep], b[keep], acc[keep]
    n = len(acc)
    if n < 3:
        return math.nan
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        if np.all(acc[idx] == acc[idx[0]]):
            continue
        ta, tb = kendall(a[idx], acc[idx])[0], kendall(b[idx], acc[idx])[0]
        diffs.append((ta if math.isfinite(ta) else 0.0) - (tb if math.isfinite(tb) else 0.0))
    if len(diffs) < resamples / 2:
        return math.nan
    return float(np.quantile(diffs, quantile))


def choose_proxy(scores: Mapping[str, Sequence[float]], accuracy: Sequence[float], fallback: str,
                 baseline: str = BASELINE, resamples: int = RESAMPLES, quantile: float = QUANTILE,
                 seed: int = 0) -> tuple[list[ProxyRank], Choice]:
    """Rank ``scores`` against ``accuracy`` and pick the proxy to search with.

    Args:
        scores: proxy name → its score of each student (same order as ``accuracy``); must
            include ``baseline``.
        accuracy: each student's distilled accuracy.
        fallback: the proxy kept when none beats the baseline by more than the noise.
        baseline: the proxy to beat (``params``).
        resamples: bootstrap resamples for the margin.
        quantile: the family-wise quantile, divided by the number of proxies (other than the
            baseline) with a defined τ: the best must beat the baseline in all but that share
            of resamples.
        seed: the bootstrap's seed.

    Returns:
        The ranking (highest τ first) and the choice. Among proxies of equal τ the fallback
        comes first, then the order of ``scores``.
    """
    if baseline not in scores:
        raise ValueError(f"the baseline proxy {baseline!r} must be among the scores")
    ranking = rank_proxies(scores, accuracy)
    tau = {r.proxy: r.tau for r in ranking}
    finite = [r for r in ranking if r.proxy != baseline and math.isfinite(r.tau)]
    if not finite:
        reason = f"no proxy has a defined τ on these {len(accuracy)} students (constant scores or accuracies); keeping {fallback}"
        return ranking, Choice(fallback, None, math.nan, baseline, tau[baseline], math.nan, quantile, False, fallback, len(accuracy), reason)
    top = max(r.tau for r in finite)
    tied = [r.proxy for r in finite if r.tau == top]
    best = fallback if fallback in tied else tied[0]
    q = quantile / len(finite)  # the best of len(finite) proxies was picked
    margin = bootstrap_margin(scores[best], scores[baseline], accuracy, resamples, q, seed)
    beats = math.isfinite(margin) and margin > 0
    said = f"{best} τ={top:+.3f} vs {baseline} τ={_fmt(tau[baseline])} on {len(accuracy)} students"
    noise = f"bootstrap {q * 100:.2g}% quantile of the difference, {quantile:.0%} over {len(finite)} proxies: {_fmt(margin)}"
    if beats:
        reason = f"{said} ({noise} > 0); searching with {best}"
    elif math.isfinite(tau[baseline]) and top <= tau[baseline]:
        reason = f"no proxy ranks better than {baseline} (best: {said}); keeping {fallback}"
    else:
        why = f"{noise} ≤ 0" if math.isfinite(margin) else "too few distinct students for the bootstrap"
        reason = f"{said}, not better by more than the noise ({why}); keeping {fallback}"
    return ranking, Choice(best if beats else fallback, best, top, baseline, tau[baseline], margin, q, beats, fallback, len(accuracy), reason)


def _fmt(value: float) -> str:
    return f"{value:+.3f}" if math.isfinite(value) else "undefined"


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


def _cell(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else ""


def plot_ranking(ranking: Sequence[ProxyRank], choice: Choice, path: str | Path) -> None:
    """A bar of τ per proxy, the baseline grey and the chosen proxy red; the baseline's τ as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in ranking if math.isfinite(r.tau)]
    fig, ax = plt.subplots(figsize=(6, 0.8 + 0.28 * max(len(shown), 1)))
    colours = ["tab:red" if r.proxy == choice.proxy else "tab:gray" if r.proxy == choice.baseline else "tab:blue" for r in shown]
    ax.barh([r.proxy for r in shown][::-1], [r.tau for r in shown][::-1], color=colours[::-1])
    if math.isfinite(choice.tau_baseline):
        ax.axvline(choice.tau_baseline, color="tab:gray", linestyle="--", linewidth=1, label=f"{choice.baseline} τ")
        ax.legend(loc="lower right", fontsize=8)
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_xlim(-1, 1)
    ax.set_xlabel(f"Kendall τ with distilled accuracy ({choice.students} students)")
    ax.set_title(f"searching with {choice.proxy}" + ("" if choice.beats else " (no proxy beat the noise)"), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
