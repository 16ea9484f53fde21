"""search.py --race.finalists N: the finalists race after the trials, the winner becomes best_arch.json, a rerun reads it back."""

from __future__ import annotations

import csv
import json

import pytest

import search
from das.calibrate import race as race_module
from das.cli import USER_ERROR, guarded
from das.search.race_step import finalists

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_finalists_are_the_best_ranked_and_the_largest() -> None:
    rows = [{"spec": str(i), "rank": i + 1, "params": p, "feasible": True} for i, p in enumerate([30, 10, 50, 20])]
    rows.append({"spec": "over", "rank": 5, "params": 99, "feasible": False})
    assert [r["spec"] for r in finalists(rows, 2)] == ["0", "1", "2"]  # the top 2, then the largest in budget
    assert [r["spec"] for r in finalists(rows, 3)] == ["0", "1", "2"]  # the largest is already among them


BAD = {
    "finalists_1": (["--race.finalists", "1"], "race.finalists=1"),
    "finalists_negative": (["--race.finalists", "-2"], "race.finalists=-2"),
    "epochs_0": (["--race.finalists", "2", "--race.epochs", "0"], "race.epochs=0"),
    "eta_1": (["--race.finalists", "2", "--race.eta", "1"], "race.eta=1"),
    "no_validation": (["--race.finalists", "2", "--data.val_fraction", "0"], "data.val_fraction=0"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_race_values_fail_in_one_line_before_any_work(case, tmp_path, capsys) -> None:
    flags, said = BAD[case]
    run = tmp_path / "run"
    assert guarded(search.main, ["--run_dir", str(run), "--device", "cpu", *flags]) == USER_ERROR
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], lines
    assert not (run / "teacher").exists()


def test_a_race_picks_best_arch_and_a_rerun_reads_it_back(tmp_path, capsys, monkeypatch) -> None:
    """The quickstart shrunk to seconds (8×8 images, C = 4, a 1-epoch teacher), 4 trials, 2 finalists + the largest."""
    run = tmp_path / "run"
    argv = ["--run_dir", str(run), "--data.image_size", "8", "--data.batch_size", "32", "--space.args", '{"C": 4, "N": 1}',
            "--teacher.epochs", "1", "--study.trials", "4", "--study.probe_batch_size", "32", "--device", "cpu",
            "--race.finalists", "2", "--race.epochs", "2"]
    assert search.main(argv) == 0
    out = capsys.readouterr().out
    assert "race: " in out and " wins at " in out and "× one 2-epoch distillation of the largest finalist" in out
    summary = json.loads((run / "search_summary.json").read_text())
    race = summary["race"]
    rows = list(csv.DictReader((run / "leaderboard.csv").open()))
    raced = [r for r in rows if r["race_val_acc"]]
    feasible = [r for r in rows if r["feasible"] == "True"]
    assert len(raced) == len(race["finalists"]) >= 2
    assert max(feasible, key=lambda r: int(r["params"]))["arch"] in {r["arch"] for r in raced}  # the largest in budget races
    best = json.loads((run / "best_arch.json").read_text())
    assert best["search"]["race"]["winner"] == race["winner"]
    winner = next(r for r in raced if r["arch"] == race["winner"])
    assert float(winner["race_val_acc"]) == max(float(r["race_val_acc"]) for r in raced if r["race_epochs"] == winner["race_epochs"])
    assert best["search"]["trial"] == int(winner["trial"])

    def refuse(*args, **kwargs):
        raise AssertionError("a finished race was trained again")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    other = tmp_path / "other"  # a race interrupted at once leaves the zero-cost leaderboard and best_arch.json behind
    monkeypatch.setattr(race_module, "_train_to", interrupted)
    with pytest.raises(KeyboardInterrupt):
        search.main([*argv[:1], str(other), *argv[2:]])
    assert (other / "leaderboard.csv").is_file() and "race" not in json.loads((other / "best_arch.json").read_text())["search"]

    monkeypatch.setattr(race_module, "_train_to", refuse)
    assert search.main(argv) == 0
    assert json.loads((run / "search_summary.json").read_text())["race"]["winner"] == race["winner"]
