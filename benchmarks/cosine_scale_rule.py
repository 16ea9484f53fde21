"""Apply the pre-registered rule for the default cosine scale to the runs that decide it.

The rule (docs/decisions.md, "The default cosine scale", fixed before these runs): the default
is the candidate scale whose *lowest* regime gain is highest, a regime's gain being the mean over
its students of distilled − alone accuracy (points); candidates within ``--tie`` points of that
go to the one with the highest mean gain over the regimes. Regimes:

- R1, ResNet-56 → ResNet-20 at 32×32 (``benchmarks/cifar10_distill.py``'s table, two seeds): the
  stage-wise variants where they were run, the final-map one at scale 25 (stage-wise was not);
- R2, the NB201 population's protocol on 8 students it had not trained (``--only 6:14``);
- R3, the resnet_cifar population's protocol on its first 8 (``--only 0:8``).

R2 and R3 are ``distill_ground_truth.py`` results files, one per scale, in ``--checks``
(``nb201_fresh_s<S>.jsonl``, ``resnet_cifar_s<S>.jsonl``). Only the students present at every
scale run in a regime count, so a partial run compares like with like. A scale not yet run in a
regime can only lower that scale's worst case: it is decided without the run when it cannot
reach the winner's worst case, and the script refuses to decide when it could. Writes ``--out`` (JSON).

    python -m benchmarks.cosine_scale_rule
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import print_table, read_results, write_json
from das.cli import guarded
from das.errors import DasError

SCALES = (1, 25, 400)

#: R1's variant of ``cifar10_distill.json`` at each scale (stage-wise where it was run).
R1_VARIANTS = {1: "kd_stage_cosine", 25: "kd_cosine_s25", 400: "kd_stage_cosine_s400"}

#: The population regimes' results files, by regime name: a pattern with ``{scale}``.
POPULATION_FILES = {"R2 nb201 16px (fresh 8)": "nb201_fresh_s{scale}.jsonl", "R3 resnet_cifar 16px (first 8)": "resnet_cifar_s{scale}.jsonl"}


def r1_gains(table: Path) -> dict[int, dict[str, Any]]:
    """Each scale's mean test gain over alone in the CIFAR-10 table (seeds averaged)."""
    results = json.loads(table.read_text())["results"]
    alone = results["alone"]["test_acc"]["mean"]
    missing = [v for v in [*R1_VARIANTS.values(), "alone"] if v not in results]
    if missing:
        raise DasError(f"{table} has no {missing}: run python -m benchmarks.cifar10_distill with those variants first")
    return {s: {"gain": results[v]["test_acc"]["mean"] - alone, "n": results[v]["n"], "source": v} for s, v in R1_VARIANTS.items()}


def population_gains(checks: Path, pattern: str) -> dict[int, dict[str, Any]]:
    """Each scale's mean gain over the students trained at every scale run so far; a scale not run is left out."""
    runs: dict[int, dict[str, float]] = {}
    for scale in SCALES:
        path = checks / pattern.format(scale=scale)
        if records := read_results(path)[1]:  # a file with no student yet is not a run
            runs[scale] = {r["key"]: r["gain"] for r in records}
    if not runs:
        raise DasError(f"no {checks / pattern} exists: run the recipe check (docs/decisions.md, 'The default cosine scale') first")
    students = max((set(r) for r in runs.values()), key=len)  # the regime's students: the fullest run's
    full = {s: r for s, r in runs.items() if students <= set(r)}  # a run missing any of them is partial: left out, shown apart
    if not full:
        raise DasError(f"no run of {checks / pattern} holds every student of the fullest one")
    gains: dict[int, dict[str, Any]] = {s: {"gain": statistics.fmean(r[k] for k in students), "n": len(students),
                                            "per_student": sorted(r[k] for k in students)} for s, r in full.items()}
    for s, r in runs.items():
        if s not in full:
            gains.setdefault("partial", {})[s] = {"gain": statistics.fmean(r.values()), "n": len(r), "per_student": sorted(r.values())}
    return gains


def decide(regimes: dict[str, dict[int, dict[str, Any]]], tie: float) -> dict[str, Any]:
    """The rule: highest lowest-regime gain; within ``tie`` of it, highest mean gain.

    A scale missing from a regime can only lower that scale's worst case, so it is decided
    without the run when its known worst case is already more than ``tie`` below a complete
    scale's; otherwise the run is needed and the call fails saying which.
    """
    regimes = {n: {s: v for s, v in r.items() if s != "partial"} for n, r in regimes.items()}
    complete = [s for s in SCALES if all(s in r for r in regimes.values())]
    if not complete:
        raise DasError("no scale was run in every regime: run the recipe check first")
    worst = {s: min(r[s]["gain"] for r in regimes.values() if s in r) for s in SCALES}
    best_worst = max(worst[s] for s in complete)
    undecided = [s for s in SCALES if s not in complete and worst[s] >= best_worst - tie]
    if undecided:
        missing = sorted(n for n in regimes for s in undecided if s not in regimes[n])
        raise DasError(f"scale(s) {undecided} could still win: their runs in {missing} are needed")
    contenders = [s for s in complete if worst[s] >= best_worst - tie]
    mean = {s: statistics.fmean(r[s]["gain"] for r in regimes.values()) for s in complete}
    chosen = max(contenders, key=lambda s: mean[s])
    return {"worst_case_gain": worst, "worst_case_is_a_bound": [s for s in SCALES if s not in complete], "mean_gain": mean,
            "contenders": contenders, "chosen_scale": chosen}


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--table", default="benchmarks/results/cifar10_distill.json", help="R1: cifar10_distill.py's summary")
    p.add_argument("--checks", default="benchmarks/results/gt_recipe_check", help="R2 and R3: the recipe check's results files")
    p.add_argument("--tie", type=float, default=0.25, help="points within which worst cases count as equal (pre-registered: 0.25)")
    p.add_argument("--out", default="benchmarks/results/cosine_scale_rule.json", help="the decision, JSON")
    args = p.parse_args(argv)
    regimes = {"R1 resnet20 32px (2 seeds)": r1_gains(Path(args.table))}
    regimes |= {name: population_gains(Path(args.checks), pattern) for name, pattern in POPULATION_FILES.items()}
    decision = decide(regimes, args.tie)
    shown = lambda d, s: f"{d[s]:+.2f}" if s in d else "not run"  # noqa: E731
    rows = [[name, *(shown({k: v["gain"] for k, v in r.items() if k != "partial"}, s) for s in SCALES), str(next(iter(r.values()))["n"])]
            for name, r in regimes.items()]
    rows += [[f"  {name}: partial run", *(f"{r['partial'][s]['gain']:+.2f} (n={r['partial'][s]['n']})" if s in r["partial"] else "" for s in SCALES), ""]
             for name, r in regimes.items() if "partial" in r]
    rows += [["worst case (≤ where a run is missing)", *(shown(decision["worst_case_gain"], s) for s in SCALES), ""],
             ["mean", *(shown(decision["mean_gain"], s) for s in SCALES), ""]]
    print_table(["regime (mean gain, points)", *(f"scale {s}" for s in SCALES), "n"], rows)
    print(f"default cosine scale by the rule: {decision['chosen_scale']} (contenders within {args.tie}: {decision['contenders']})")
    write_json(Path(args.out), {"benchmark": "cosine_scale_rule", "rule": __doc__.split("\n\n")[1], "tie": args.tie,
                                "regimes": {n: {str(s): v for s, v in r.items()} for n, r in regimes.items()},
                                **{k: ({str(s): v for s, v in d.items()} if isinstance(d, dict) else d) for k, d in decision.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
