"""Calibration on the user's own space: the rule it fits, its fallbacks, its one-line refusals, and a tiny run end to end."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

import search
from das.calibrate.calibration import plot_calibration, rank_proxies, write_ranking
from das.cli import USER_ERROR, guarded
from das.calibrate.trainer import train_student
from das.search.calibration_step import RESULTS, choose_rule


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def records(accuracy, **scores) -> list[dict]:
    """Calibration records as calibration_step writes them (params given or a constant-free default)."""
    n = len(accuracy)
    scores.setdefault("params", np.arange(n, 0, -1) * 1000.0)  # size orders them backwards unless given
    return [{"arch": f"s{i}", "distilled_acc": float(accuracy[i]), "diverged": False, "seconds": 30.0,
             "scores": {k: float(v[i]) for k, v in scores.items()}} for i in range(n)]


def choose(recs, configured="size_first"):
    proxies = sorted({k for r in recs for k in r["scores"]})
    return choose_rule(recs, proxies, configured, {}, [], 1.0, 0)


def test_a_score_that_orders_the_students_is_searched_as_that_proxy(tmp_path) -> None:
    acc = np.linspace(40, 60, 10)
    cal = choose(records(acc, az_expressivity=acc * 2, meco=-acc))
    assert cal.objective == "az_expressivity" and cal.features == ["az_expressivity"]
    assert cal.reason.startswith("searching with az_expressivity: selection: az_expressivity (cross-validated regret 0.00")
    assert cal.summary()["rule"]["name"] == "az_expressivity" and cal.summary()["minutes"] == 1.0

    write_ranking(rank_proxies({"params": acc[::-1], "good": acc}, acc), tmp_path / "calibration.csv")
    rows = list(csv.DictReader((tmp_path / "calibration.csv").open()))
    assert [r["proxy"] for r in rows] == ["good", "params"] and float(rows[0]["tau"]) == 1.0
    plot_calibration(acc, acc, cal.selection.rule.describe(), tmp_path / "calibration.png")
    assert (tmp_path / "calibration.png").stat().st_size > 0


def test_a_combination_is_searched_as_selection_computed_from_its_proxies() -> None:
    rng = np.random.default_rng(0)
    meco, expr = rng.normal(size=12), rng.normal(size=12)
    acc = 50 + meco + expr  # neither score alone orders them; together they do
    cal = choose(records(acc, params=rng.uniform(1e4, 1e5, 12), meco=meco, az_expressivity=expr))
    assert cal.objective == "selection" and set(cal.features) >= {"meco", "az_expressivity"}
    assert cal.selection.regrets["ridge"] < min(v for k, v in cal.selection.regrets.items() if k != "ridge")
    one = {"params": 5e4, "meco": 1.0, "az_expressivity": 1.0}
    low = {"params": 5e4, "meco": -1.0, "az_expressivity": -1.0}
    assert cal.value(one) > cal.value(low)
    assert math.isnan(cal.value({"params": 5e4}))  # a candidate missing a score has no value (Optuna fails it)


def test_diverged_students_are_left_out_and_an_unfittable_calibration_keeps_the_configured_objective() -> None:
    acc = np.linspace(40, 60, 6)
    recs = records(acc, meco=acc)
    recs[2] = {**recs[2], "diverged": True, "distilled_acc": float("nan")}
    cal = choose(recs)
    assert cal.reason.startswith("1 diverged student(s) left out; searching with")
    assert cal.objective == "meco"

    flat = choose(records(np.full(5, 50.0), meco=np.arange(5.0)))
    assert flat.selection is None and flat.objective == "size_first"
    assert "all 5 calibration accuracies equal" in flat.reason and flat.reason.endswith("keeping study.objective=size_first")
    few = choose(records(np.array([50.0, 51.0]), meco=np.arange(2.0)))
    assert few.objective == "size_first" and "at least 3 students" in few.reason


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
    said = [line for line in out.splitlines() if line.startswith("calibration: ") and "min of training and scoring" in line]
    assert len(said) == 1, out

    summary = json.loads((run / "search_summary.json").read_text())
    chosen = summary["objective"]
    assert summary["calibration"]["objective"] == chosen and summary["calibration"]["students"] == 3
    assert f"searching with {chosen}" in said[0] or f"keeping study.objective={chosen}" in said[0]
    assert "min of training and scoring" in said[0]
    assert json.loads((run / "best_arch.json").read_text())["search"]["proxy"] == chosen
    assert json.loads((run / "selection.json").read_text())["objective"] == chosen

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


def test_more_calibration_students_than_the_budget_holds_is_one_line_naming_both() -> None:
    from das.errors import DasError
    from das.search.calibration_step import _draw_students
    from das.search.config import BudgetConfig, CalibrateConfig
    from das.spaces import create_space

    space = create_space("resnet_cifar")  # 8,000 members: about 1 in 9 under 120k params, very few under 50k
    fits = _draw_students(CalibrateConfig(students=3), space, BudgetConfig(max_params=120_000), 10, (3, 8, 8))
    assert len({s.to_json() for s in fits}) == 3
    with pytest.raises(DasError, match=r"found only \d+ distinct students within the budget .*calibrate.students \(now 8\)") as err:
        _draw_students(CalibrateConfig(students=8), space, BudgetConfig(max_params=50_000), 10, (3, 8, 8))
    assert "\n" not in str(err.value)
