"""benchmarks/objective_rule.py: the pre-registered choice of the default objective on constructed results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import objective_rule as rule
from das.cli import guarded
from das.errors import DasError

SECONDS = {"params": 0.01, "synflow": 0.05, "snip": 0.45, "diswot": 0.21, "meco": 0.25, "zico": 0.99, "az_expressivity": 0.27,
           "az_progressivity": 0.27, "az_trainability": 0.46, "az_complexity": 0.05}


def entry(mean: float | None, spearman: float = 0.5) -> dict:
    return {"in_budget_vs_distilled_acc": {"mean": mean, "per_budget": [mean] * 3}, "vs_distilled_acc": {"spearman": spearman},
            "partial_vs_distilled_acc_given_log_params": {"spearman": 0.1}}


def test_a_score_clearly_above_params_becomes_the_default() -> None:
    decision = rule.decide({"params": entry(0.40), "snip": entry(0.55), "synflow": entry(0.45)}, SECONDS, tie=0.02)
    assert decision["chosen"] == "snip" and decision["beats_params"]


def test_a_score_within_the_tie_of_params_loses_to_params() -> None:
    # snip is ahead by 0.015 only: a tie, and params is the cheapest score there is
    decision = rule.decide({"params": entry(0.40), "snip": entry(0.415)}, SECONDS, tie=0.02)
    assert decision["chosen"] == "params" and not decision["beats_params"]
    assert list(decision["contenders"]) == ["params", "snip"]


def test_tied_scores_go_to_the_cheaper_one_with_combinations_costing_their_members() -> None:
    results = {"params": entry(0.10), "ensemble": entry(0.60), "ensemble+diswot": entry(0.61), "diswot@teacher_trained/bn_eval": entry(0.595)}
    decision = rule.decide(results, SECONDS, tie=0.02)
    ensemble = sum(SECONDS[m] for m in ("meco", "zico", "az_expressivity", "az_progressivity", "az_trainability", "az_complexity"))
    assert decision["contenders"]["ensemble"]["seconds"] == pytest.approx(ensemble)
    assert decision["contenders"]["ensemble+diswot"]["seconds"] == pytest.approx(ensemble + 0.21)
    assert decision["chosen"] == "diswot@teacher_trained/bn_eval"  # a variant costs what its term costs: 0.21 s


def test_an_undefined_criterion_cannot_win_and_a_missing_timing_is_named() -> None:
    decision = rule.decide({"params": entry(0.3), "synflow": entry(None)}, SECONDS, tie=0.02)
    assert decision["chosen"] == "params" and decision["undefined"] == ["synflow"]
    with pytest.raises(DasError, match="grasp"):
        rule.decide({"params": entry(0.3), "grasp": entry(0.9)}, SECONDS, tie=0.02)


def write(path: Path, population: str, results: dict) -> Path:
    picks = [{"picks": {n: {"regret": 1.0 + i} for n in results}} for i in range(3)]
    path.write_text(json.dumps({"population": population, "results": results, "budget_picks": picks}))
    return path


def test_main_chooses_on_s_alone_and_reports_c(tmp_path: Path) -> None:
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps({"per_proxy_mean_seconds": SECONDS}))
    s = write(tmp_path / "s.json", "nb201", {"params": entry(0.4), "snip": entry(0.6), "synflow": entry(0.1)})
    outs = []
    for i, c_synflow in enumerate((0.1, 0.99)):  # C says synflow is far better: the choice must not move
        c = write(tmp_path / f"c{i}.json", "resnet_cifar", {"params": entry(0.5), "snip": entry(0.2), "synflow": entry(c_synflow)})
        out = tmp_path / f"rule{i}.json"
        assert rule.main(["--selection", str(s), "--confirmation", str(c), "--speed", str(speed), "--out", str(out)]) == 0
        outs.append(json.loads(out.read_text()))
    assert [o["chosen"] for o in outs] == ["snip", "snip"]
    conf = outs[1]["confirmation"]
    assert conf["snip"]["criterion"] == 0.2 and conf["params"]["criterion"] == 0.5 and conf["snip"]["regret_per_budget"] == [1.0, 2.0, 3.0]
    assert conf["chosen_rank_on_c"] == {"rank": 3, "of": 3}


def test_a_missing_results_file_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert guarded(rule.main, ["--selection", str(tmp_path / "none.json")]) != 0
    err = capsys.readouterr().err.strip()
    assert "none.json does not exist" in err and len(err.splitlines()) == 1
