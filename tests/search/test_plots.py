"""RUN_DIR/plots: PNGs always, Optuna's HTML only with plotly, and the correlations they show are Spearman's."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import optuna
import pytest
from scipy.stats import spearmanr

import das.search.plots as plots
from das.search.pareto import non_dominated
from das.search.plots import rank_correlations, write_plots


def rows_and_study(n: int = 12, directions: tuple[str, ...] = ("maximize",)):
    """Leaderboard-like rows (some over budget, unscored) and a study whose trials are tagged as a search tags them."""
    rng = np.random.default_rng(0)
    study = optuna.create_study(directions=list(directions))
    rows = []
    for i in range(n):
        params = int(rng.integers(1000, 5000))
        feasible = params <= 4000
        a, b = float(rng.normal()), float(rng.normal())
        values = [a, params][: len(directions)] if feasible else [(-math.inf if d == "maximize" else math.inf) for d in directions]
        attrs = {"kind": "scored" if feasible else "infeasible", "params": params}
        study.add_trial(optuna.trial.create_trial(values=values, user_attrs=attrs, constraints={"params": params / 4000 - 1}))
        rows.append({"trial": i, "rank": 0, "arch": f"a{i}", "diswot": a if feasible else None, "snip": b if feasible else None,
                     "params": params, "flops": 10 * params + int(rng.integers(0, 5)), "feasible": feasible, "spec": "{}"})
    rows.sort(key=lambda r: (not r["feasible"], -(r["diswot"] or 0)))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows, study


def test_pngs_are_written_and_html_only_with_plotly(tmp_path, monkeypatch) -> None:
    rows, study = rows_and_study()
    monkeypatch.setattr(plots.importlib.util, "find_spec", lambda name: None)  # as without plotly
    written = write_plots(tmp_path, rows, ["diswot", "snip"], ["diswot"], ["maximize"], study, max_params=4000)
    names = sorted(p.name for p in written)
    assert names == ["history.png", "proxy_correlations.png", "score_vs_params.png"]
    assert all((tmp_path / "plots" / n).stat().st_size > 1000 for n in names)
    monkeypatch.undo()
    if importlib.util.find_spec("plotly") is None:
        pytest.skip("plotly is not installed: the HTML plots are optional")
    rows, study = rows_and_study(directions=("maximize", "minimize"))
    written = write_plots(tmp_path / "mo", rows, ["diswot", "params"], ["diswot", "params"], ["maximize", "minimize"], study, None)
    assert {"history.html", "pareto_front.html"} <= {p.name for p in written}
    assert (tmp_path / "mo" / "plots" / "plotly.min.js").is_file()  # opens offline


def test_rank_correlations_are_spearmans_over_the_scored_rows() -> None:
    rows, _ = rows_and_study()
    names, rho = rank_correlations(rows, ["diswot", "snip"])
    assert names == ["diswot", "snip", "params", "flops"]
    scored = [r for r in rows if r["feasible"]]
    expected = spearmanr([[r[n] for n in names] for r in scored]).statistic
    assert np.allclose(rho, expected) and np.allclose(np.diag(rho), 1.0)
    assert rank_correlations(scored[:2], ["diswot"]) is None  # too few to rank


def test_two_varying_columns_give_a_two_by_two_matrix(tmp_path) -> None:
    """A params-only search (objective params, no report) ranks params against flops: scipy returns one number there."""
    rows, study = rows_and_study()
    names, rho = rank_correlations(rows, ["params"])
    assert names == ["params", "flops"] and rho.shape == (2, 2) and np.allclose(np.diag(rho), 1.0)
    assert rho[0, 1] == rho[1, 0] == pytest.approx(spearmanr([r["params"] for r in rows if r["feasible"]],
                                                             [r["flops"] for r in rows if r["feasible"]]).statistic)
    assert (plots.proxy_correlations(rows, ["params"], tmp_path / "rho.png")).is_file()


def test_the_front_is_what_no_row_dominates() -> None:
    rows = [{"feasible": True, "s": s, "params": p} for s, p in ((1.0, 10), (2.0, 20), (1.5, 30), (2.0, 20), (0.5, 5))]
    rows.append({"feasible": False, "s": 9.0, "params": 1})  # over budget: never on the front
    front = non_dominated(rows, ["s", "params"], ["maximize", "minimize"])
    assert [(r["s"], r["params"]) for r in front] == [(1.0, 10), (2.0, 20), (2.0, 20), (0.5, 5)]
