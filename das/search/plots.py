"""RUN_DIR/plots/: what a person looks at after a search.

- ``score_vs_params.png``: each scored student's objective against its parameters, the Pareto
  front of the two (best score for its size), the budget line, and the over-budget candidates
  (unscored) as ticks along the bottom;
- ``history.png``: the objective of each scored trial in order, with the best so far (a sampler
  that learns climbs faster than random);
- ``proxy_correlations.png``: Spearman's ρ between every two reported proxies over the study's
  scored students (two proxies near ρ = 1 rank the same way: reporting both adds little);
- with plotly installed (``pip install -e ".[plots]"``), Optuna's interactive versions
  (:mod:`optuna.visualization`): ``history.html``, and ``pareto_front.html`` for several
  objectives (with ``plotly.min.js`` beside them, so they open offline).

Matplotlib (Agg) always; Optuna's plots read a copy of the study holding only the scored
trials, since an over-budget trial's value is ±inf.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from das.search.ledger import SCORED, kind_of
from das.search.pareto import non_dominated

PLOTS_DIR = "plots"


def write_plots(run_dir: Path, rows: list[dict[str, Any]], proxies: list[str], objectives: list[str], directions: list[str],
                study: optuna.Study, max_params: int | None) -> list[Path]:
    """Write every plot the study's rows allow into ``run_dir/plots``; return the files written.

    ``proxies`` are the leaderboard's columns (objectives first); ``directions`` the objectives'.
    """
    out = run_dir / PLOTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    written = [score_vs_params(rows, proxies[0], directions[0], max_params, out / "score_vs_params.png"),
               history(rows, proxies[0], directions[0], out / "history.png")]
    correlations = proxy_correlations(rows, proxies, out / "proxy_correlations.png")
    if correlations is not None:
        written.append(correlations)
    written += optuna_html(study, objectives, out)
    return written


def _scored(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["feasible"] and r.get(name) is not None and math.isfinite(r[name])]


def score_vs_params(rows: list[dict[str, Any]], objective: str, direction: str, max_params: int | None, path: Path) -> Path:
    """Score against parameters with the front of the two, the budget and the rejected candidates."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    scored = _scored(rows, objective)
    if scored:
        ax.scatter([r["params"] for r in scored], [r[objective] for r in scored], s=12, c="tab:blue", label="scored, within budget")
        front = sorted(non_dominated(scored, [objective, "params"], [direction, "minimize"]), key=lambda r: r["params"])
        ax.step([r["params"] for r in front], [r[objective] for r in front], where="post", c="tab:red", lw=1.2,
                marker="o", ms=4, label=f"Pareto front ({len(front)})")
        best = min(scored, key=lambda r: r["rank"])
        ax.scatter([best["params"]], [best[objective]], s=90, marker="*", c="gold", edgecolors="k", zorder=3, label="best")
    rejected = [r["params"] for r in rows if not r["feasible"]]
    if rejected:
        ax.plot(rejected, [0.02] * len(rejected), "|", c="tab:gray", ms=8, transform=ax.get_xaxis_transform(),
                label=f"over budget, not scored ({len(rejected)})")
    if max_params is not None:
        ax.axvline(max_params, c="k", ls="--", lw=1, label=f"max_params {max_params:,}")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"{objective} ({'higher' if direction == 'maximize' else 'lower'} is better)")
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def history(rows: list[dict[str, Any]], objective: str, direction: str, path: Path) -> Path:
    """The objective of each scored architecture in trial order, and the best so far."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    scored = sorted(_scored(rows, objective), key=lambda r: r["trial"])
    if scored:
        trials = [r["trial"] for r in scored]
        values = np.array([r[objective] for r in scored])
        best = np.maximum.accumulate(values) if direction == "maximize" else np.minimum.accumulate(values)
        ax.scatter(trials, values, s=10, c="tab:blue", label="scored architecture")
        ax.step(trials, best, where="post", c="tab:red", label="best so far")
    rejected = [r["trial"] for r in rows if not r["feasible"]]
    if rejected:
        ax.plot(rejected, [0.02] * len(rejected), "|", c="tab:gray", ms=8, transform=ax.get_xaxis_transform(),
                label="over budget (first trial of each)")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def rank_correlations(rows: list[dict[str, Any]], proxies: list[str]) -> tuple[list[str], np.ndarray] | None:
    """Spearman's ρ between every two of ``proxies`` (and params, flops) over the rows scored on all of them."""
    from scipy.stats import spearmanr

    names = list(dict.fromkeys([*proxies, "params", "flops"]))
    complete = [r for r in rows if r["feasible"] and all(r.get(n) is not None and math.isfinite(float(r[n])) for n in names)]
    if len(complete) < 3:
        return None
    values = np.array([[float(r[n]) for n in names] for r in complete])
    varying = [i for i in range(len(names)) if np.ptp(values[:, i]) > 0]  # a constant column has no rank order
    if len(varying) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = spearmanr(values[:, varying]).statistic
    if np.ndim(rho) == 0:  # two columns: scipy gives their ρ alone, not the matrix
        rho = np.array([[1.0, rho], [rho, 1.0]])
    return [names[i] for i in varying], rho


def proxy_correlations(rows: list[dict[str, Any]], proxies: list[str], path: Path) -> Path | None:
    """A heat map of :func:`rank_correlations`; None (no file) with fewer than 3 scored rows or 2 varying scores."""
    import matplotlib.pyplot as plt

    found = rank_correlations(rows, proxies)
    if found is None:
        return None
    names, rho = found
    size = 1.2 + 0.55 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(rho, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{rho[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w" if abs(rho[i, j]) > 0.6 else "k")
    n = sum(1 for r in rows if r["feasible"])
    ax.set_title(f"Spearman ρ over {n} scored students", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def optuna_html(study: optuna.Study, objectives: list[str], out: Path) -> list[Path]:
    """Optuna's interactive history (and Pareto front for several objectives) as HTML, when plotly is installed."""
    if importlib.util.find_spec("plotly") is None:
        return []
    from optuna import visualization

    scored = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if kind_of(t) == SCORED]
    if not scored:
        return []
    copy = optuna.create_study(directions=study.directions)
    copy.add_trials(scored)
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if len(study.directions) == 1:
            figures = {"history.html": visualization.plot_optimization_history(copy)}
        else:
            figures = {
                "history.html": visualization.plot_optimization_history(copy, target=lambda t: t.values[0], target_name=objectives[0]),
                "pareto_front.html": visualization.plot_pareto_front(copy, target_names=objectives),
            }
    for name, figure in figures.items():
        figure.write_html(out / name, include_plotlyjs="directory")  # one plotly.min.js beside them: opens offline
        written.append(out / name)
    return written
