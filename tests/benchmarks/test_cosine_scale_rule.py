"""benchmarks/cosine_scale_rule.py: the pre-registered max-min rule on constructed gains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import cosine_scale_rule as rule
from das.errors import DasError


def regimes(*gains_per_regime: tuple[float, float, float]) -> dict[str, dict[int, dict[str, float]]]:
    return {f"R{i}": {s: {"gain": g} for s, g in zip(rule.SCALES, gains)} for i, gains in enumerate(gains_per_regime)}


def test_the_best_worst_case_wins_not_the_best_mean() -> None:
    # scale 400 has the best mean (+3.0) but costs the second regime 4 points; scale 1 never costs
    decision = rule.decide(regimes((3.0, 6.0, 10.0), (1.0, 0.0, -4.0)), tie=0.25)
    assert decision["chosen_scale"] == 1 and decision["worst_case_gain"][400] == -4.0


def test_worst_cases_within_the_tie_go_to_the_higher_mean() -> None:
    decision = rule.decide(regimes((3.0, 6.0, 10.0), (1.0, 0.9, -4.0)), tie=0.25)
    assert decision["contenders"] == [1, 25] and decision["chosen_scale"] == 25


def write_run(path: Path, gains: dict[str, float]) -> None:
    path.write_text("\n".join([json.dumps({"settings": {}}), *(json.dumps({"key": k, "gain": g}) for k, g in gains.items())]) + "\n")


def test_a_run_missing_students_is_partial_and_left_out_of_the_rule(tmp_path: Path) -> None:
    write_run(tmp_path / "p_s1.jsonl", {"a": 1.0, "b": 3.0})
    write_run(tmp_path / "p_s25.jsonl", {"b": 2.0, "a": 0.0})
    write_run(tmp_path / "p_s400.jsonl", {"a": -3.0})  # stopped after one student
    gains = rule.population_gains(tmp_path, "p_s{scale}.jsonl")
    assert (gains[1]["gain"], gains[25]["gain"], gains[1]["n"]) == (2.0, 1.0, 2) and 400 not in gains
    assert gains["partial"][400] == {"gain": -3.0, "n": 1, "per_student": [-3.0]}


def test_a_missing_run_is_needed_only_when_it_could_change_the_winner() -> None:
    # scale 400 not run in R0: its R1 gain (-4) already puts it out of reach, so scale 1 wins without it
    partial = regimes((3.0, 6.0, 10.0), (1.0, 0.0, -4.0))
    del partial["R0"][400]
    decision = rule.decide(partial, tie=0.25)
    assert decision["chosen_scale"] == 1 and decision["worst_case_is_a_bound"] == [400]
    # scale 25 not run in R1 while its R0 gain (6) could still make it the winner: refused in one line
    partial = regimes((3.0, 6.0, 10.0), (1.0, 0.0, -4.0))
    del partial["R1"][25]
    with pytest.raises(DasError, match=r"scale\(s\) \[25\] could still win: their runs in \['R1'\]") as err:
        rule.decide(partial, tie=0.25)
    assert "\n" not in str(err.value)


def test_a_missing_file_is_left_out_and_no_file_fails(tmp_path: Path) -> None:
    write_run(tmp_path / "p_s1.jsonl", {"a": 1.0})
    assert list(rule.population_gains(tmp_path, "p_s{scale}.jsonl")) == [1]
    with pytest.raises(DasError, match="no .*q_s"):
        rule.population_gains(tmp_path, "q_s{scale}.jsonl")
