"""Replay selection rules on the committed populations: does a pick beat "the largest that fits"?

A user meets a selection rule once, on their own students. This script replays that meeting many
times on each committed population (students distilled for the ground truth, each scored at
initialisation by ``benchmarks/ground_truth_proxies.py``): for K calibration students drawn at
random (``--draws`` seeded draws, K in ``--ks``), :func:`das.calibrate.fit_selection` is fitted on
the K's scores and distilled accuracies alone, and judged on the students it did not see.

**Regret** at a budget: among the held-back students with params <= budget, the best distilled
accuracy minus that of the rule's top student (ties: their mean). Budgets are the 25th, 50th
and 75th percentiles of the population's params (as in ``ground_truth_proxies``). Per rule and K:
the mean over draws of the mean over the three budgets, each budget's mean, and the worst decile
(the 90th percentile over draws of the per-draw mean).

**Rules** beside the calibrated one, judged on the same held-back students of every draw:
``params`` (the largest that fits), ``default`` (the search's default objective, StudyConfig's),
``meco`` (the default before the rule that chose ``size_first``),
``ridge`` (the combination always, fitted on the K: what the choice among candidates adds),
and ``hindsight``: the single score whose picks regret least on the whole population, a bound
no user can reach (it looks at every accuracy).

**Race** (``--ns``): the top N in-budget held-back students by a rule, plus always the largest in
budget, each distilled on a short schedule; the one with the best short-run accuracy is kept and
judged on the ground truth. Replayed where short runs exist for the same students (the ground
truth's own ``.short<E>.jsonl``, on validation images), with the short accuracies a user would
see, after ``params``, the default, the calibrated rule and the rule calibrated on the K's short
runs (``calibrated_on_short``: what a user who never runs a full distillation meets). N in
``--ns`` traces regret against cost. Cost is the finalists' short-run FLOPs-epochs over one full
distillation of the largest in-budget student (FLOPs × epochs; every finalist run to the end: the
search's successive halving stops some early, so this is the race's upper bound). A calibration's
cost (``cost_mean`` of ``calibrated`` and ``calibrated_on_short``) is the K runs' FLOPs-epochs on
the same scale.

The scores entering the fit are ``--features`` (default: das.calibrate.selection.COMBINED, what a
search scores its calibration students with). No accuracy of the held-back students enters a fit.

    python -m benchmarks.selection_replay
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from das.calibrate.selection import COMBINED, fit_ridge, fit_selection
from das.cli import guarded
from das.proxies.size_first import size_first_value
from das.errors import DasError
from das.report.output import print_table, write_json
from das.report.provenance import code_version, machine_info, now_iso
from das.spec import ArchSpec

RESULTS = Path("benchmarks/results")
#: The default objective before the default rule of docs/decisions.md, replayed beside the current one.
PREVIOUS_DEFAULT = "meco"
PERCENTILES = (25, 50, 75)

#: The committed populations: name -> (ground truth summary, scores file, an older short-run summary or None).
#: Short runs come from the ground truth's own ``.short<E>.jsonl`` (distilled only, validation images) when
#: it has one, else from the older summary (S's 10-epoch ground truth: the same students, test images).
POPULATIONS: dict[str, tuple[str, str, str | None]] = {
    "S": ("distill_ground_truth_nb201_e30.json", "ground_truth_proxies_nb201_e30.scores.csv", "distill_ground_truth_nb201.json"),
    "C": ("distill_ground_truth_resnet_cifar.json", "ground_truth_proxies_resnet_cifar.scores.csv", None),
    "T": ("distill_ground_truth_mobilenetv3.json", "ground_truth_proxies_mobilenetv3.scores.csv", None),
}


def available(results: Path = RESULTS) -> list[str]:
    """The populations whose ground truth and scores are both committed."""
    return [name for name, (gt, scores, _) in POPULATIONS.items() if (results / gt).is_file() and (results / scores).is_file()]


@dataclass(frozen=True)
class Population:
    """One population's students: params, FLOPs, ground-truth and short-run distilled accuracy, scores."""

    name: str
    params: np.ndarray
    flops: np.ndarray
    accuracy: np.ndarray
    short: np.ndarray | None
    scores: dict[str, np.ndarray]
    epochs: int
    short_epochs: int | None
    short_source: str | None = None

    def __len__(self) -> int:
        return len(self.accuracy)


def load_population(name: str, results: Path = RESULTS) -> Population:
    gt_file, scores_file, short_file = POPULATIONS[name]
    gt = json.loads((results / gt_file).read_text())
    students = [s for s in gt["students"] if s.get("distilled_acc") is not None]
    keys = [ArchSpec.from_dict(s["spec"]).to_json() for s in students]
    with (results / scores_file).open() as f:
        rows = {r["key"]: r for r in csv.DictReader(line for line in f if not line.startswith("#"))}
    missing = [k for k in keys if k not in rows]
    if missing:
        raise DasError(f"{scores_file} has no scores for {len(missing)} students of {gt_file}; rerun ground_truth_proxies with --resume")
    columns = [c for c in next(iter(rows.values())) if c not in ("key", "arch", "seconds") and "@" not in c]
    scores = {c: np.array([_number(rows[k][c]) for k in keys]) for c in columns}
    scores["params"] = np.array([float(s["params"]) for s in students])
    if "meco" in scores:  # the search's default objective, from the two scores it is made of
        scores["size_first"] = np.array([size_first_value(p, m) for p, m in zip(scores["params"], scores["meco"])])
    short = short_epochs = short_source = None
    own = sorted(results.glob(gt_file.removesuffix(".json") + ".short*.jsonl"))
    if own:
        lines = [json.loads(line) for line in own[-1].read_text().splitlines() if line.strip()]
        by_arch = {r["arch"]: r.get("distilled_acc") for r in lines[1:]}
        epochs_short, source = int(lines[0]["settings"]["recipe"]["epochs"]), f"{own[-1].name} (validation images)"
    elif short_file and (results / short_file).is_file():
        other = json.loads((results / short_file).read_text())
        by_arch = {s["arch"]: s.get("distilled_acc") for s in other["students"]}
        epochs_short, source = int(other["settings"]["epochs"]), f"{short_file} (test images)"
    else:
        by_arch = {}
    if by_arch and all(by_arch.get(s["arch"]) is not None for s in students):
        short = np.array([float(by_arch[s["arch"]]) for s in students])
        short_epochs, short_source = epochs_short, source
    return Population(name, scores["params"], np.array([float(s["flops"]) for s in students]),
                      np.array([float(s["distilled_acc"]) for s in students]), short, scores,
                      int(gt["settings"]["epochs"]), short_epochs, short_source)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def budgets(params: np.ndarray) -> list[float]:
    return [float(np.percentile(params, q)) for q in PERCENTILES]


def pick_regret(objective: np.ndarray, accuracy: np.ndarray) -> float:
    """Best accuracy minus the accuracy of the top-ranked student (ties: their mean; -inf/nan rank last)."""
    value = np.where(np.isfinite(objective), objective, -np.inf)
    top = value == value.max()
    return float(accuracy.max() - accuracy[top].mean())


def regrets_at_budgets(objective: np.ndarray, pop: Population, members: np.ndarray, limits: Sequence[float]) -> list[float]:
    out = []
    for b in limits:
        inside = members[pop.params[members] <= b]
        out.append(pick_regret(objective[inside], pop.accuracy[inside]) if len(inside) else math.nan)
    return out


def hindsight_score(pop: Population, names: Sequence[str]) -> str:
    """The single score whose picks regret least on the whole population (ties: the first)."""
    everyone = np.arange(len(pop))
    limits = budgets(pop.params)
    means = {n: float(np.mean(regrets_at_budgets(signed(pop.scores[n], n), pop, everyone, limits))) for n in names}
    return min(means, key=lambda n: (means[n], list(names).index(n)))


def signed(values: np.ndarray, name: str) -> np.ndarray:
    return np.log(values) if name == "params" else values


def race(order: np.ndarray, pop: Population, inside: np.ndarray, n: int) -> tuple[float, float]:
    """Regret and cost of racing the top ``n`` of ``inside`` by ``order`` plus the largest, on short runs (nan: none in budget)."""
    if not len(inside):
        return math.nan, math.nan
    ranked = inside[np.argsort(-order[inside], kind="stable")]
    largest = inside[np.argmax(pop.params[inside])]
    finalists = np.unique(np.concatenate([ranked[:n], [largest]]))
    short = pop.short[finalists]
    winners = finalists[short == short.max()]
    regret = float(pop.accuracy[inside].max() - pop.accuracy[winners].mean())
    cost = float(pop.flops[finalists].sum() * pop.short_epochs / (pop.flops[largest] * pop.epochs))
    return regret, cost


def calibration_cost(pop: Population, cal: np.ndarray, held: np.ndarray, limits: Sequence[float], epochs: int) -> float:
    """The K calibration runs' FLOPs-epochs over one full distillation of the largest in-budget held-back student (mean over budgets)."""
    spent = pop.flops[cal].sum() * epochs
    full = [pop.flops[held[pop.params[held] <= b]].max() * pop.epochs for b in limits if (pop.params[held] <= b).any()]
    return float(np.mean([spent / f for f in full]))


def size_first(pop: Population, tie_break: str) -> np.ndarray:
    """A ranking by params whose exact ties are ordered by ``tie_break`` (a failed score ranks last in its tie)."""
    tie = np.where(np.isfinite(pop.scores[tie_break]), pop.scores[tie_break], -np.inf)
    order = np.lexsort((tie, pop.params))  # last key primary: params, then the tie-break
    rank = np.empty(len(pop))
    rank[order] = np.arange(len(pop))
    return rank


def default_rule(pop: Population, tie_break: str = "meco") -> dict[str, list[float]]:
    """Regret at each budget of the uncalibrated default's candidates, fixed in docs/decisions.md, picking among every student.

    The candidates: params; params with exact ties broken by ``tie_break`` (shipped as the
    ``size_first`` proxy); ``tie_break`` alone (meco, the default before the rule).
    """
    everyone = np.arange(len(pop))
    limits = budgets(pop.params)
    candidates = {"params": np.log(pop.params), f"params>{tie_break}": size_first(pop, tie_break), tie_break: pop.scores[tie_break]}
    return {name: regrets_at_budgets(value, pop, everyone, limits) for name, value in candidates.items()}


def decide_default(by_pop: Mapping[str, Mapping[str, list[float]]]) -> dict[str, Any]:
    """The pre-registered rule: qualify by never losing to params at any budget; the lowest worst-case mean wins; else params."""
    names = list(next(iter(by_pop.values())))
    qualified = [n for n in names if n != "params"
                 and all(r <= p + 1e-9 for pop in by_pop.values() for r, p in zip(pop[n], pop["params"]))]
    worst = {n: max(float(np.mean(pop[n])) for pop in by_pop.values()) for n in names}
    chosen = min(qualified, key=lambda n: (worst[n], names.index(n))) if qualified else "params"
    if qualified and worst[chosen] > worst["params"]:
        chosen = "params"
    return {"qualified": qualified, "worst_case_mean": worst, "chosen": chosen}


def replay(pop: Population, ks: Sequence[int], ns: Sequence[int], draws: int, seed: int, features: Sequence[str],
           default: str) -> dict[str, Any]:
    limits = budgets(pop.params)
    names = [f for f in features if f in pop.scores]
    hindsight = hindsight_score(pop, [n for n in pop.scores if np.all(np.isfinite(pop.scores[n]))])
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"students": len(pop), "budgets": limits, "features": names, "default": default, "hindsight": hindsight,
                           "epochs": pop.epochs, "short_epochs": pop.short_epochs, "short_source": pop.short_source, "by_k": {}}
    for k in ks:
        if not 3 <= k < len(pop) - 1:
            raise DasError(f"--ks {k} must be between 3 and {len(pop) - 2} for a population of {len(pop)}")
        rules = ("calibrated", "params", "default", PREVIOUS_DEFAULT, "ridge", "hindsight") + (("calibrated_on_short",) if pop.short is not None else ())
        per: dict[str, list[list[float]]] = {m: [] for m in rules}
        races: dict[str, list[list[tuple[float, float]]]] = {}  # rule+raceN -> per draw, per budget: (regret, cost)
        costs: dict[str, list[float]] = {}
        chosen: dict[str, int] = {}
        for _ in range(draws):
            cal = np.sort(rng.choice(len(pop), size=k, replace=False))
            held = np.setdiff1d(np.arange(len(pop)), cal)
            selection = fit_selection({n: pop.scores[n][cal] for n in names}, pop.accuracy[cal])
            chosen[selection.name] = chosen.get(selection.name, 0) + 1
            objective = {
                "calibrated": selection.objective({n: pop.scores[n] for n in names}),
                "params": np.log(pop.params),
                "default": signed(pop.scores[default], default),
                PREVIOUS_DEFAULT: pop.scores[PREVIOUS_DEFAULT],
                "hindsight": signed(pop.scores[hindsight], hindsight),
            }
            if pop.short is not None:  # what a user meets: the K's short-run accuracies, judged on the ground truth
                on_short = fit_selection({n: pop.scores[n][cal] for n in names}, pop.short[cal])
                objective["calibrated_on_short"] = on_short.objective({n: pop.scores[n] for n in names})
            ridge = fit_ridge({n: pop.scores[n][cal] for n in names if n in COMBINED}, pop.accuracy[cal])
            objective["ridge"] = np.zeros(len(pop)) if ridge is None else ridge.objective({n: pop.scores[n] for n in names})
            for m, value in objective.items():
                per[m].append(regrets_at_budgets(value, pop, held, limits))
            for m, epochs in (("calibrated", pop.epochs), ("calibrated_on_short", pop.short_epochs)):
                if m in objective:
                    costs.setdefault(m, []).append(calibration_cost(pop, cal, held, limits, epochs))
            if pop.short is not None:
                for n in ns:
                    for m in ("calibrated", "calibrated_on_short", "default", "params"):
                        races.setdefault(f"{m}+race{n}", []).append(
                            [race(objective[m], pop, held[pop.params[held] <= b], n) for b in limits])
        out["by_k"][str(k)] = {
            "chosen": dict(sorted(chosen.items(), key=lambda kv: -kv[1])),
            "rules": {m: {**summary(v), **({"cost_mean": float(np.mean(costs[m]))} if m in costs else {})} for m, v in per.items()},
            "races": {m: {**summary([[r for r, _ in draw] for draw in v]), "regret_mean": summary([[r for r, _ in draw] for draw in v])["mean"],
                          "cost_mean": float(np.nanmean([[c for _, c in draw] for draw in v]))}
                      for m, v in races.items()},
        }
    return out


def summary(rows: list[list[float]]) -> dict[str, Any]:
    a = np.asarray(rows, dtype=float)  # draws × budgets
    per_draw = np.nanmean(a, axis=1)
    return {"mean": float(np.nanmean(per_draw)), "worst_decile": float(np.nanpercentile(per_draw, 90)),
            "by_budget": [float(v) for v in np.nanmean(a, axis=0)]}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--populations", default=None, help="comma list of " + ", ".join(POPULATIONS) + " (default: every one committed)")
    p.add_argument("--ks", default="4,8,16", help="calibration students per draw")
    p.add_argument("--ns", default="1,2,4,8", help="race finalists (besides the largest in budget): a regret-against-cost curve")
    p.add_argument("--draws", type=int, default=200, help="random draws of the calibration students per K")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    p.add_argument("--features", default=",".join(COMBINED), help="the scores a calibration fit sees")
    p.add_argument("--results", default=str(RESULTS), help="folder of the committed results files")
    p.add_argument("--out", default=str(RESULTS / "selection_replay.json"), help="summary JSON")
    return p.parse_args(list(argv))


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise DasError(f"{flag} {text!r} must be a comma list of integers") from None


def main(argv: Sequence[str]) -> int:
    from das.search.config import StudyConfig  # the default objective a user gets without calibration

    args = parse_args(argv)
    started = time.perf_counter()
    ks, ns = _ints(args.ks, "--ks"), _ints(args.ns, "--ns")
    if args.draws < 1 or any(n < 1 for n in ns):
        raise DasError("--draws and every --ns must be at least 1")
    default = StudyConfig().objective
    committed = available(Path(args.results))
    pops = committed if args.populations is None else [p.strip() for p in args.populations.split(",") if p.strip()]
    unknown = [p for p in pops if p not in committed]
    if unknown:
        raise DasError(f"--populations {unknown} are not committed populations (ground truth and scores) in {args.results}; "
                       f"choose from {', '.join(committed) or 'none'}")
    result: dict[str, Any] = {"benchmark": "selection_replay", "populations": {}}
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    defaults = {}
    for name in pops:
        defaults[name] = default_rule(load_population(name, Path(args.results)))
    result["default_rule"] = {"regret_by_budget": defaults, **decide_default(defaults)}
    for name, by in defaults.items():
        print(f"{name} default candidates (regret q25/q50/q75): " + "; ".join(f"{n} {' / '.join(f'{v:.2f}' for v in r)}" for n, r in by.items()))
    print(f"uncalibrated default by the rule: {result['default_rule']['chosen']} (qualified: {result['default_rule']['qualified']})")
    for name in pops:
        pop = load_population(name, Path(args.results))
        result["populations"][name] = replay(pop, ks, ns, args.draws, args.seed, features, default)
        res = result["populations"][name]
        rows = []
        for k, block in res["by_k"].items():
            for m, s in block["rules"].items():
                rows.append([name, k, m, f"{s['mean']:.2f}", f"{s['worst_decile']:.2f}", " / ".join(f"{v:.2f}" for v in s["by_budget"])])
            for m, r in block["races"].items():
                rows.append([name, k, m, f"{r['mean']:.2f}", f"{r['worst_decile']:.2f}",
                             " / ".join(f"{v:.2f}" for v in r["by_budget"]) + f"; cost {r['cost_mean']:.2f}× full"])
        print_table(["pop", "K", "rule", "mean regret", "worst decile", "by budget (q25/q50/q75)"], rows)
        print(f"{name}: hindsight best single score {res['hindsight']}; default {default}; chosen at K: "
              + "; ".join(f"{k}: {b['chosen']}" for k, b in res["by_k"].items()))
    result["settings"] = {**vars(args), "default_objective": default, "seconds": time.perf_counter() - started,
                          "date": now_iso(), "machine": machine_info(), "code": code_version()}
    write_json(Path(args.out), result)
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
