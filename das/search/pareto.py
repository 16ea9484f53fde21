"""RUN_DIR/pareto.json: the non-dominated students of a search with several objectives.

A candidate is on the front when no other feasible candidate is at least as good on every
objective and better on one (Deb et al., NSGA-II, IEEE TEC 2002, §III-A), each objective in its
own direction (:mod:`das.search.directions`). Entries are ordered by the first objective, best
first (ties by trial number), and numbered from 1: ``train.py --model.student
runs/x/pareto.json#3`` distils the third (read by :func:`das.models.pareto_spec`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from das.spec import ArchSpec

def non_dominated(rows: list[dict[str, Any]], names: list[str], directions: list[str]) -> list[dict[str, Any]]:
    """The feasible rows with finite objectives that no other such row dominates, in leaderboard order."""
    pool = [r for r in rows if r["feasible"] and all(r.get(n) is not None and math.isfinite(r[n]) for n in names)]
    if not pool:
        return []
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in directions])
    values = np.array([[r[n] for n in names] for r in pool], dtype=float) * signs  # every column: higher is better
    front = []
    for i, row in enumerate(pool):
        at_least = (values >= values[i]).all(axis=1)
        better = (values > values[i]).any(axis=1)
        if not (at_least & better).any():
            front.append(row)
    return front


def write_pareto(rows: list[dict[str, Any]], names: list[str], directions: list[str], path: Path, **context: Any) -> list[dict[str, Any]]:
    """Write pareto.json and mark each front row of ``rows`` with its ``pareto`` index; return the entries."""
    front = non_dominated(rows, names, directions)
    entries = []
    for index, row in enumerate(front, start=1):
        row["pareto"] = index
        entries.append({
            "index": index,
            "trial": row["trial"],
            "rank": row["rank"],
            "arch": row["arch"],
            "spec": ArchSpec.from_json(row["spec"]).to_dict(),
            "scores": {k: row[k] for k in names},
            "params": row["params"],
            "flops": row["flops"],
            **({"latency_ms": row["latency_ms"]} if "latency_ms" in row else {}),
        })
    body = {"objectives": names, "directions": directions, "front": entries, **context}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(path)
    return entries
