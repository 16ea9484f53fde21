"""Apply the pre-registered rule for the default search objective: choose on S, report on C.

The rule (docs/decisions.md, "Populations S and C, and the objective rule"): on the selection population S
(NB201) only, every score ``ground_truth_proxies.py`` reports is a candidate (registered proxies,
the ensemble, the declared ``ensemble+diswot`` combination, the DisWOT variants, and ``params``
itself); its criterion is the mean over the three parameter budgets of the Spearman ρ between
score and distilled accuracy among the students in budget (``in_budget_vs_distilled_acc``).
Candidates within ``--tie`` (0.02) of the best criterion go to the cheapest; the default is the
winner, which is ``params`` whenever no score beats it by more than the tie (``params`` is the
cheapest score there is). A score whose criterion is undefined on S cannot be chosen.

"Cheapest", fixed with this script before any ground-truth proxy score existed: the mean
seconds per architecture that ``benchmarks/proxy_speed.py`` measured for the proxy
(``--speed``); a combination costs the sum of its members, a DisWOT variant what its term costs.
Only then is C (resnet_cifar) read, to report the chosen score there beside ``params``; nothing
from C enters the choice (the code reads it after the decision is made). Writes ``--out`` (JSON).

    python -m benchmarks.objective_rule
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import fmt, print_table, write_json
from das.cli import guarded
from das.errors import DasError
from das.proxies import ENSEMBLE_MEMBERS

BASELINE = "params"


def members(score: str) -> tuple[str, ...]:
    """The registered proxies a score is computed from (a DisWOT variant: its term; a combination: its parts)."""
    if score == "ensemble":
        return ENSEMBLE_MEMBERS
    if score == "ensemble+diswot":
        return (*ENSEMBLE_MEMBERS, "diswot")
    return (score.split("@", 1)[0],)


def cost(score: str, seconds: Mapping[str, float]) -> float:
    """Measured seconds per architecture of ``score``: the sum over its members."""
    missing = [m for m in members(score) if m not in seconds]
    if missing:
        raise DasError(f"the speed file has no timing for {missing} (needed by {score!r}); rerun python -m benchmarks.proxy_speed")
    return sum(seconds[m] for m in members(score))


def criterion(entry: Mapping[str, Any]) -> float | None:
    return entry["in_budget_vs_distilled_acc"]["mean"]


def decide(results: Mapping[str, Mapping[str, Any]], seconds: Mapping[str, float], tie: float) -> dict[str, Any]:
    """The rule on S's results: best criterion; within ``tie`` of it, the cheapest; params is a candidate too."""
    if BASELINE not in results or criterion(results[BASELINE]) is None:
        raise DasError(f"the selection results have no defined {BASELINE!r} criterion: rerun ground_truth_proxies.py on S")
    defined = {name: criterion(r) for name, r in results.items() if criterion(r) is not None}
    best = max(defined.values())
    contenders = sorted((name for name, c in defined.items() if c >= best - tie), key=lambda n: (cost(n, seconds), n))
    chosen = contenders[0]
    return {"criterion": defined, "undefined": sorted(set(results) - set(defined)), "best_criterion": best,
            "contenders": {n: {"criterion": defined[n], "seconds": cost(n, seconds)} for n in contenders},
            "chosen": chosen, "beats_params": chosen != BASELINE}


def confirmation(results: Mapping[str, Mapping[str, Any]], picks: Sequence[Mapping[str, Any]], chosen: str) -> dict[str, Any]:
    """The chosen score and params on C: the criterion, ρ with distilled accuracy, partial ρ and the budget picks' regret."""
    def row(name: str) -> dict[str, Any]:
        if name not in results:
            raise DasError(f"the confirmation results have no {name!r}: rerun ground_truth_proxies.py on C with it")
        r = results[name]
        return {"criterion": criterion(r), "spearman_vs_distilled_acc": r["vs_distilled_acc"]["spearman"],
                "partial_given_log_params": r["partial_vs_distilled_acc_given_log_params"]["spearman"],
                "regret_per_budget": [(b["picks"].get(name) or {}).get("regret") for b in picks]}
    out = {name: row(name) for name in dict.fromkeys([chosen, BASELINE])}
    ordered = sorted((n for n in results if criterion(results[n]) is not None), key=lambda n: -criterion(results[n]))
    out["chosen_rank_on_c"] = {"rank": ordered.index(chosen) + 1 if chosen in ordered else None, "of": len(ordered)}
    return out


def read(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise DasError(f"{path} does not exist: run python -m benchmarks.ground_truth_proxies on that population first")
    return json.loads(file.read_text())


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--selection", default="benchmarks/results/ground_truth_proxies_nb201.json", help="S: ground_truth_proxies.py on NB201")
    p.add_argument("--confirmation", default="benchmarks/results/ground_truth_proxies_resnet_cifar.json",
                   help="C: ground_truth_proxies.py on resnet_cifar, read only after the choice ('' to skip)")
    p.add_argument("--speed", default="benchmarks/results/proxy_speed.json", help="proxy_speed.py's measured seconds per proxy")
    p.add_argument("--tie", type=float, default=0.02, help="criterion difference counted as a tie (pre-registered: 0.02)")
    p.add_argument("--out", default="benchmarks/results/objective_rule.json", help="the decision and its C figures, JSON")
    args = p.parse_args(argv)
    selection = read(args.selection)
    decision = decide(selection["results"], read(args.speed)["per_proxy_mean_seconds"], args.tie)
    rows = [[n, fmt(c["criterion"]), f"{c['seconds']:.3f}"] for n, c in decision["contenders"].items()]
    print_table(["contender on S (within the tie)", "mean in-budget ρ", "s/arch"], rows)
    print(f"default objective by the rule: {decision['chosen']}"
          + ("" if decision["beats_params"] else f" (no score beat {BASELINE} by more than {args.tie})"))
    result: dict[str, Any] = {"benchmark": "objective_rule", "rule": __doc__.split("\n\n")[1], "tie": args.tie,
                              "selection": Path(args.selection).name, "selection_population": selection["population"], **decision}
    if args.confirmation:  # only now: C cannot reach the decision above
        conf = read(args.confirmation)
        result["confirmation"] = {"file": Path(args.confirmation).name, "population": conf["population"],
                                  **confirmation(conf["results"], conf["budget_picks"], decision["chosen"])}
        c = result["confirmation"]
        print_table(["on C", "mean in-budget ρ", "ρ distilled", "partial ρ", "regret p25/p50/p75"],
                    [[n, fmt(c[n]["criterion"]), fmt(c[n]["spearman_vs_distilled_acc"]), fmt(c[n]["partial_given_log_params"]),
                      " / ".join(fmt(x, 2) for x in c[n]["regret_per_budget"])] for n in dict.fromkeys([decision["chosen"], BASELINE])])
    write_json(Path(args.out), result)
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
