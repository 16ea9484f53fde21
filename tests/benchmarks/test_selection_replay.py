"""selection_replay on a made-up population: a hand-computed regret, the default rule, the race, refusals."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from benchmarks import selection_replay as sr
from das.errors import DasError
from das.spaces import create_space

N = 12


def write_population(folder, name: str, accuracy, params, scores, short=None) -> None:
    space = create_space("resnet_cifar")
    specs = list(space.enumerate())[:N]
    gt_file, scores_file, short_file = sr.POPULATIONS[name]
    students = [{"arch": str(s), "spec": s.to_dict(), "params": int(p), "flops": int(p) * 10, "distilled_acc": float(a)}
                for s, p, a in zip(specs, params, accuracy)]
    (folder / gt_file).write_text(json.dumps({"students": students, "settings": {"epochs": 30}}))
    with (folder / scores_file).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["key", "arch", "seconds", *scores])
        writer.writeheader()
        for i, s in enumerate(specs):
            writer.writerow({"key": s.to_json(), "arch": str(s), "seconds": 0.1, **{k: v[i] for k, v in scores.items()}})
    if short_file and short is not None:
        (folder / short_file).write_text(json.dumps({"students": [{"arch": str(s), "distilled_acc": float(a)} for s, a in zip(specs, short)],
                                                     "settings": {"epochs": 10}}))


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    params = np.arange(1, N + 1) * 1000.0
    accuracy = 50 + rng.normal(size=N)  # size says nothing here; meco says everything
    scores = {"meco": accuracy * 2, "az_expressivity": rng.normal(size=N), "az_progressivity": rng.normal(size=N),
              "az_trainability": rng.normal(size=N)}
    write_population(tmp_path, "S", accuracy, params, scores, short=accuracy)  # short runs that order like the truth
    write_population(tmp_path, "C", accuracy[::-1], params, {k: v[::-1] for k, v in scores.items()})
    return tmp_path


def test_regret_by_hand():
    acc = np.array([50.0, 55.0, 52.0])
    assert sr.pick_regret(np.array([1.0, 0.0, 3.0]), acc) == 3.0
    assert sr.pick_regret(np.array([1.0, 1.0, 0.0]), acc) == 55.0 - 52.5  # ties: their mean
    assert sr.pick_regret(np.array([np.nan, 0.0, -1.0]), acc) == 0.0  # a failed score ranks last


def test_replay_writes_every_rule_and_the_calibration_finds_the_informative_score(folder):
    out = folder / "replay.json"
    assert sr.main(["--results", str(folder), "--out", str(out), "--ks", "4,6", "--ns", "2", "--draws", "20"]) == 0
    result = json.loads(out.read_text())
    for name in ("S", "C"):
        pop = result["populations"][name]
        k6 = pop["by_k"]["6"]
        on_short = {"calibrated_on_short"} if name == "S" else set()  # S alone has short runs here
        assert set(k6["rules"]) == {"calibrated", "params", "default", "meco", "ridge", "hindsight"} | on_short
        assert k6["rules"]["hindsight"]["mean"] == 0.0  # meco orders them exactly
        assert k6["rules"]["calibrated"]["mean"] < k6["rules"]["params"]["mean"]
        assert max(k6["chosen"], key=k6["chosen"].get) == "meco"
    races, rules = result["populations"]["S"]["by_k"]["4"]["races"], result["populations"]["S"]["by_k"]["4"]["rules"]
    for m in ("calibrated", "default", "params"):  # short runs that agree with the truth can only improve on the rule's pick
        assert races[f"{m}+race2"]["regret_mean"] <= rules[m]["mean"] + 1e-9
    assert result["populations"]["C"]["by_k"]["4"]["races"] == {}  # no short runs for C
    s6 = result["populations"]["S"]["by_k"]["6"]["rules"]
    assert s6["calibrated_on_short"]["mean"] == s6["calibrated"]["mean"]  # short runs equal to the truth: the same fits
    assert result["populations"]["S"]["short_source"].endswith("(test images)")
    assert result["default_rule"]["chosen"] == "meco"  # here meco never loses to params, so the rule may take it


def test_default_rule_by_hand():
    by_pop = {"S": {"params": [2.0, 1.0], "params>meco": [2.0, 0.5], "meco": [0.0, 0.0]},
              "C": {"params": [1.0, 1.0], "params>meco": [1.0, 1.0], "meco": [3.0, 0.0]}}
    decided = sr.decide_default(by_pop)
    assert decided["qualified"] == ["params>meco"]  # meco loses to params at C's first budget
    assert decided["chosen"] == "params>meco"
    assert sr.decide_default({"S": {"params": [1.0], "x": [2.0]}})["chosen"] == "params"


def test_bad_arguments_are_one_line(folder):
    with pytest.raises(DasError, match="--populations"):
        sr.main(["--results", str(folder), "--populations", "Q"])
    with pytest.raises(DasError, match="choose from S, C"):
        sr.main(["--results", str(folder), "--populations", "T"])  # T's files are not there
    with pytest.raises(DasError, match="--ks 2"):
        sr.main(["--results", str(folder), "--ks", "2", "--out", str(folder / "x.json")])


def test_a_ground_truth_s_own_short_runs_are_used(folder):
    gt_file = sr.POPULATIONS["C"][0]
    students = json.loads((folder / gt_file).read_text())["students"]
    lines = [{"settings": {"recipe": {"epochs": 3}, "runs": "distilled only"}}]
    lines += [{"arch": s["arch"], "distilled_acc": s["distilled_acc"] - 5.0} for s in students]  # a short run: lower, same order
    (folder / gt_file.replace(".json", ".short3.jsonl")).write_text("".join(json.dumps(line) + "\n" for line in lines))
    pop = sr.load_population("C", folder)
    assert pop.short_epochs == 3 and pop.short_source.endswith("(validation images)")
    assert np.allclose(pop.short, pop.accuracy - 5.0)


def test_race_and_calibration_costs_by_hand(folder):
    pop = sr.load_population("S", folder)  # flops = 10 × params; params 1000..12000; 30 epochs, short runs 10
    held = np.arange(4, N)
    # Race the top 1 of students 4..7 by -params (student 4) plus the largest (student 7): (5 + 8) × 10 / (8 × 30).
    regret, cost = sr.race(-pop.params, pop, held[:4], 1)
    assert cost == pytest.approx((5 + 8) * 10 / (8 * 30))
    assert regret == pytest.approx(pop.accuracy[held[:4]].max() - pop.accuracy[[4, 7][int(np.argmax(pop.short[[4, 7]]))]])
    assert all(np.isnan(sr.race(-pop.params, pop, held[:0], 1)))  # nothing in budget: no race
    # Calibrating on students 0..3 (1+2+3+4 thousand params, full epochs) against the largest held-back in each budget.
    limits = [6500.0, 12000.0]
    assert sr.calibration_cost(pop, np.arange(4), held, limits, 30) == pytest.approx(np.mean([10 / 6, 10 / 12]))


def test_races_trace_a_curve_for_every_rule_including_the_short_calibration(folder):
    out = folder / "replay.json"
    assert sr.main(["--results", str(folder), "--out", str(out), "--ks", "4", "--ns", "1,3", "--draws", "5"]) == 0
    block = json.loads(out.read_text())["populations"]["S"]["by_k"]["4"]
    assert set(block["races"]) == {f"{m}+race{n}" for m in ("calibrated", "calibrated_on_short", "default", "params") for n in (1, 3)}
    for m in ("default", "params"):  # more finalists cost more and, with short runs that agree with the truth, never regret more
        assert block["races"][f"{m}+race3"]["cost_mean"] > block["races"][f"{m}+race1"]["cost_mean"]
        assert block["races"][f"{m}+race3"]["mean"] <= block["races"][f"{m}+race1"]["mean"] + 1e-9
    assert block["rules"]["calibrated"]["cost_mean"] == pytest.approx(3 * block["rules"]["calibrated_on_short"]["cost_mean"])
