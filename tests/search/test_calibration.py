"""Calibration on the user's own space: the proxy choice, its one-line refusals, and a tiny run end to end."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

import search
from das.calibrate.calibration import choose_proxy, kendall, plot_ranking, write_ranking
from das.cli import USER_ERROR, guarded
from das.calibrate.trainer import train_student
from das.search.calibration_step import RESULTS


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def swapped(values: np.ndarray, pairs: list[int]) -> np.ndarray:
    """``values`` with each (i, i+1) swapped: one discordant pair each, so τ = 1 − 4k / (n(n−1))."""
    out = values.copy()
    for i in pairs:
        out[[i, i + 1]] = out[[i + 1, i]]
    return out


# --------------------------------------------------------------------------- the choice


def test_the_proxy_with_the_highest_tau_is_chosen_and_the_table_says_so(tmp_path) -> None:
    acc = np.arange(16, dtype=float)
    scores = {
        "params": np.array([3, 0, 7, 1, 5, 2, 12, 4, 6, 15, 8, 9, 11, 14, 10, 13], dtype=float),  # a loose ranking
        "good": swapped(acc, [0]),  # one discordant pair of 120
        "fair": swapped(acc, [0, 4, 8, 12]),
        "inverse": -acc,
        "constant": np.ones(16),
    }
    ranking, choice = choose_proxy(scores, acc, fallback="fair", seed=0)
    tau = {r.proxy: r.tau for r in ranking}
    assert tau["good"] == pytest.approx(1 - 2 / 120) and tau["fair"] == pytest.approx(1 - 8 / 120) and tau["inverse"] == -1
    assert math.isnan(tau["constant"]) and ranking[-1].proxy == "constant"  # an undefined τ is ranked last
    assert [r.proxy for r in ranking[:2]] == ["good", "fair"] and tau["params"] < tau["fair"]
    assert choice.proxy == choice.best == "good" and choice.beats and choice.margin > 0
    assert "good τ=+0.983 vs params" in choice.reason and "searching with good" in choice.reason

    write_ranking(ranking, tmp_path / "calibration.csv")
    rows = list(csv.DictReader((tmp_path / "calibration.csv").open()))
    assert [r["proxy"] for r in rows] == [r.proxy for r in ranking]
    assert float(rows[0]["tau"]) == pytest.approx(tau["good"]) and rows[0]["n"] == "16" and rows[-1]["tau"] == ""
    plot_ranking(ranking, choice, tmp_path / "calibration.png")
    assert (tmp_path / "calibration.png").stat().st_size > 0


def test_nothing_beats_params_by_more_than_the_noise_so_the_configured_objective_stays() -> None:
    acc = np.arange(6, dtype=float)
    # "slightly" ranks better than params (τ 0.87 against 0.73) but on 6 students that is within the noise.
    scores = {"params": swapped(acc, [0, 2]), "slightly": swapped(acc, [0]), "configured": swapped(acc, [0, 2, 4])}
    _, choice = choose_proxy(scores, acc, fallback="configured", seed=0)
    assert choice.best == "slightly" and not choice.beats and choice.margin <= 0
    assert choice.proxy == "configured" and "not better by more than the noise" in choice.reason and "keeping configured" in choice.reason

    # params itself ranks best: no proxy beats it, whatever the noise.
    _, choice = choose_proxy({"params": acc, "other": swapped(acc, [1])}, acc, fallback="other", seed=0)
    assert choice.proxy == "other" and not choice.beats and choice.reason.startswith("no proxy ranks better than params")


def test_a_proxy_that_failed_on_a_student_is_ranked_on_the_others() -> None:
    assert kendall([1.0, float("nan"), 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])[::2] == (1.0, 3)


# --------------------------------------------------------------------------- one-line refusals

BAD = {
    "students_2": (["--calibrate.students", "2"], ["calibrate.students=2", "0 (off) or at least 3"]),
    "students_1": (["--calibrate.students", "1"], ["calibrate.students=1", "at least 3"]),
    "students_negative": (["--calibrate.students", "-4"], ["calibrate.students=-4", "at least 3"]),
    "epochs_0": (["--calibrate.students", "3", "--calibrate.epochs", "0"], ["calibrate.epochs=0", "positive integer"]),
    "epochs_negative": (["--calibrate.students", "3", "--calibrate.epochs", "-1"], ["calibrate.epochs=-1", "positive integer"]),
    "train_images": (["--calibrate.students", "3", "--calibrate.train_images", "1"], ["calibrate.train_images=1", "at least 2"]),
    "no_validation": (["--calibrate.students", "3", "--data.val_fraction", "0"], ["data.val_fraction=0", "validation split"]),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_calibrate_values_fail_in_one_line_before_any_work(case, tmp_path, capsys) -> None:
    flags, said = BAD[case]
    run = tmp_path / "run"
    assert guarded(search.main, ["--run_dir", str(run), "--device", "cpu", *flags]) == USER_ERROR
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for text in said:
        assert text in lines[0], lines[0]
    assert not (run / "teacher").exists() and not (run / "calibration.csv").exists()


# --------------------------------------------------------------------------- end to end


def test_calibration_end_to_end_on_the_digits_quickstart_and_its_resume(tmp_path, capsys, monkeypatch) -> None:
    """The quickstart shrunk to seconds (8×8 images, C = 4, a 1-epoch teacher), 3 students of 1 epoch."""
    run = tmp_path / "run"
    argv = ["--run_dir", str(run), "--data.image_size", "8", "--data.batch_size", "32", "--space.args", '{"C": 4, "N": 1}',
            "--teacher.epochs", "1", "--study.trials", "2", "--study.probe_batch_size", "32", "--device", "cpu",
            "--calibrate.students", "3", "--calibrate.epochs", "1"]
    assert search.main(argv) == 0
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if line.startswith("calibration: ") and " on 3 students" in line]
    assert len(said) == 1, out

    summary = json.loads((run / "search_summary.json").read_text())
    chosen = summary["objective"]
    assert summary["calibration"]["proxy"] == chosen and summary["calibration"]["students"] == 3
    assert (f"searching with {chosen}" in said[0]) == summary["calibration"]["beats"]
    assert summary["calibration"]["beats"] or f"keeping {chosen}" in said[0]
    assert json.loads((run / "best_arch.json").read_text())["search"]["proxy"] == chosen

    ranked = {r["proxy"]: r for r in csv.DictReader((run / "calibration.csv").open())}
    skipped = summary["calibration"]["skipped"]
    assert "params" in ranked and "diswot" in ranked and "zico" in skipped  # zico needs 2 probe batches; the quickstart has 1
    assert all(r["n"] == "3" for r in ranked.values())
    students = list(csv.DictReader((run / "calibration_students.csv").open()))
    assert len(students) == 3 and all(0 <= float(s["distilled_acc"]) <= 100 for s in students)
    assert all(int(s["params"]) <= 40000 for s in students)  # the quickstart's budget
    assert (run / "calibration.png").stat().st_size > 0 and (run / RESULTS).is_file()

    # A calibration killed after two students: the rerun trains the third only, to the same figures.
    table = (run / "calibration.csv").read_text()
    lines = (run / RESULTS).read_text().splitlines(keepends=True)
    (run / RESULTS).write_text("".join(lines[:-1]))
    trained = []

    def counted(*args, **kwargs):
        trained.append(args[0])
        return train_student(*args, **kwargs)

    monkeypatch.setattr("das.search.calibration_step.train_student", counted)
    assert search.main(argv) == 0
    assert len(trained) == 1 and "distilling 1 of 3 students" in capsys.readouterr().out
    assert (run / "calibration.csv").read_text() == table

    # A rerun reads the finished calibration back: nothing is trained or cached again.
    def refuse(*args, **kwargs):
        raise AssertionError("a finished calibration was trained again")

    monkeypatch.setattr("das.search.calibration_step.train_student", refuse)
    monkeypatch.setattr("das.search.calibration_step.build_teacher_cache", refuse)
    assert search.main([*argv, "--study.trials", "3"]) == 0
    out = capsys.readouterr().out
    assert "already distilled" in out and (run / "calibration.csv").read_text() == table
    summary = json.loads((run / "search_summary.json").read_text())
    assert summary["objective"] == chosen and summary["scored"] == 3

    # Another calibration in the same run directory is refused in one line, before any work.
    assert guarded(search.main, [*argv[:-1], "2"]) == USER_ERROR
    err = capsys.readouterr().err
    assert "calibrate.epochs: was 1, now 2" in err and "new --run_dir" in err
