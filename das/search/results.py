"""Search outputs: leaderboard.csv, best_arch.json and a score-versus-size plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import optuna

from das.spec import ArchSpec


#: Study user attrs ``RESCORED + arch JSON`` hold proxies computed after the arch's trial
#: finished (a resumed study that reports more proxies); a finished trial cannot be changed.
RESCORED = "scores of "


def rescored(study: optuna.Study) -> dict[str, dict[str, float]]:
    """Arch JSON -> the scores computed for it after its trial, from the study's user attrs."""
    return {key[len(RESCORED):]: value for key, value in study.user_attrs.items() if key.startswith(RESCORED)}


def trial_scores(attrs: dict[str, Any], extra: dict[str, dict[str, float]]) -> dict[str, float]:
    """A trial's scores with those computed later for its architecture."""
    return {**extra.get(attrs["arch"], {}), **attrs["scores"]}


def leaderboard(study: optuna.Study, proxies: list[str]) -> list[dict[str, Any]]:
    """One row per distinct architecture scored, best first; over-budget ones last."""
    rows: dict[str, dict[str, Any]] = {}
    extra = rescored(study)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        if "arch" not in attrs or attrs["arch"] in rows:
            continue
        spec = ArchSpec.from_json(attrs["arch"])
        feasible = all(c <= 0 for c in trial.constraints.values())
        rows[attrs["arch"]] = {
            "trial": trial.number,
            "arch": str(spec),
            **{name: trial_scores(attrs, extra).get(name) for name in proxies},
            "params": attrs["params"],
            "flops": attrs["flops"],
            "feasible": feasible,
            "spec": attrs["arch"],
        }
    ordered = sorted(rows.values(), key=lambda r: (not r["feasible"], -r[proxies[0]]))
    for rank, row in enumerate(ordered, start=1):
        row["rank"] = rank
    return ordered


def write_leaderboard(rows: list[dict[str, Any]], proxies: list[str], path: Path) -> None:
    columns = ["rank", "trial", "arch", *proxies, "params", "flops", "feasible"]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)  # never leave a half-written leaderboard behind


def write_best(rows: list[dict[str, Any]], path: Path, **context: Any) -> dict[str, Any] | None:
    """best_arch.json: the top feasible architecture, its scores and what it was ranked against."""
    best = next((r for r in rows if r["feasible"]), None)
    if best is None:
        return None
    spec = ArchSpec.from_json(best["spec"])
    summary = {k: v for k, v in best.items() if k not in ("spec", "arch")}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**spec.to_dict(), "search": {**summary, **context}}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return best


def plot_scores(rows: list[dict[str, Any]], objective: str, path: Path) -> None:
    """Score against parameters, the trade-off a user picks a budget from."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for feasible, colour, label in ((True, "tab:blue", "within budget"), (False, "tab:gray", "over budget")):
        pts = [(r["params"], r[objective]) for r in rows if r["feasible"] == feasible]
        if pts:
            ax.scatter(*zip(*pts), s=12, c=colour, label=label)
    if rows and rows[0]["feasible"]:
        ax.scatter([rows[0]["params"]], [rows[0][objective]], s=80, marker="*", c="tab:red", label="best")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"{objective} (higher is better)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
