"""Search outputs: leaderboard.csv and best_arch.json (pareto.json: :mod:`das.search.pareto`; plots: :mod:`das.search.plots`)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import optuna

from das.search.ledger import INFEASIBLE, SCORED, kind_of
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


def leaderboard(study: optuna.Study, proxies: list[str], directions: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per distinct architecture, best first; over-budget ones last, with their size and no scores.

    A scored architecture is one row however many trials drew it (duplicates and isomorphs
    report its scores; see :mod:`das.search.ledger`). Rows are ordered by the first of
    ``proxies`` in its direction (``directions[0]``, default maximise); over-budget rows by size.
    """
    rows: dict[str, dict[str, Any]] = {}
    extra = rescored(study)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        kind = kind_of(trial)
        key = attrs.get("key") or attrs.get("arch")
        if "arch" not in attrs or kind not in (SCORED, INFEASIBLE) or key in rows:
            continue
        scores = trial_scores(attrs, extra) if "scores" in attrs else {}
        rows[key] = {
            "trial": trial.number,
            "arch": str(ArchSpec.from_json(attrs["arch"])),
            **{name: scores.get(name) for name in proxies},
            "params": attrs["params"],
            "flops": attrs.get("flops"),
            **({"latency_ms": attrs["latency_ms"]} if "latency_ms" in attrs else {}),
            "feasible": kind == SCORED,
            "spec": attrs["arch"],
        }
    sign = -1.0 if (directions or ["maximize"])[0] == "maximize" else 1.0

    def order(row: dict[str, Any]) -> tuple:
        value = row[proxies[0]]
        if not row["feasible"]:
            return (2, row["params"], row["trial"])
        if value is None or not math.isfinite(value):
            return (1, 0.0, row["trial"])
        return (0, sign * value, row["trial"])

    ordered = sorted(rows.values(), key=order)
    for rank, row in enumerate(ordered, start=1):
        row["rank"] = rank
    return ordered


def write_leaderboard(rows: list[dict[str, Any]], proxies: list[str], path: Path) -> None:
    """leaderboard.csv; ``latency_ms`` and ``pareto`` (the row's index in pareto.json) only when some row has them."""
    latency = ["latency_ms"] if any("latency_ms" in r for r in rows) else []
    pareto = ["pareto"] if any("pareto" in r for r in rows) else []
    raced = ["race_val_acc", "race_epochs"] if any("race_val_acc" in r for r in rows) else []
    scores = [p for p in proxies if p not in ("params", "flops")]  # those two proxies are the size columns
    columns = ["rank", "trial", "arch", *scores, "params", "flops", *latency, "feasible", *pareto, *raced]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)  # never leave a half-written leaderboard behind


def write_best(rows: list[dict[str, Any]], path: Path, choose: str | None = None, **context: Any) -> dict[str, Any] | None:
    """best_arch.json: the top feasible architecture (or the row whose spec is ``choose``: a race's winner), its scores and context."""
    best = next((r for r in rows if r["feasible"] and (choose is None or r["spec"] == choose)), None)
    if best is None:
        return None
    spec = ArchSpec.from_json(best["spec"])
    summary = {k: v for k, v in best.items() if k not in ("spec", "arch")}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**spec.to_dict(), "search": {**summary, **context}}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return best
