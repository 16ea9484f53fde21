"""A population run records each student's distilled and alone accuracies, resumes, refuses other settings, repeats itself."""

from __future__ import annotations

import dataclasses
import json

import pytest

from das.calibrate import population as population_module
from das.calibrate import train_population
from das.distill.optim import OptimConfig
from das.errors import DasError


def run(students, teacher, data, recipe, path, **kwargs):
    return train_population(students, teacher, data, recipe, path, progress=False, log=lambda _line: None, **kwargs)


def forbid_training(monkeypatch) -> list:
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a finished student was trained again")

    monkeypatch.setattr(population_module, "train_pair", refuse)
    return calls


def test_records_resume_and_refusal(tmp_path, data, teacher, students, recipe, monkeypatch) -> None:
    path = tmp_path / "population.jsonl"
    records = run(students[:2], teacher, data, recipe, path)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and "settings" in json.loads(lines[0])
    for record, spec in zip(records, students[:2], strict=True):
        assert record["spec"] == spec.to_dict() and record["params"] > 0 and record["flops"] > 0 and record["seed"] == 0
        assert record["gain"] == pytest.approx(record["distilled_acc"] - record["alone_acc"])
        assert record["seconds_distilled"] > 0 and record["seconds_alone"] > 0
        assert 0 <= record["alone_acc"] <= 100 and not record["distilled_diverged"]
    # Rerunning the same call trains nothing and returns the same records.
    real = population_module.train_pair
    forbid_training(monkeypatch)
    assert run(students[:2], teacher, data, recipe, path) == records
    # A longer list trains only the new student.
    trained = []
    monkeypatch.setattr(population_module, "train_pair", lambda student, *a, **k: trained.append(student) or real(student, *a, **k))
    assert run(students, teacher, data, recipe, path)[:2] == records and len(trained) == 1
    assert len(path.read_text().splitlines()) == 4
    # Other settings are refused, naming the keys that differ, and the file is left as it was.
    before = path.read_text()
    faster = dataclasses.replace(recipe, optim=OptimConfig(lr=0.1))
    with pytest.raises(DasError, match=r"recipe\.optim\.lr: file 0\.05, now 0\.1") as err:
        run(students, teacher, data, faster, path)
    assert "\n" not in str(err.value)
    with pytest.raises(DasError, match=r"\(seed: file 0, now 1\)"):
        run(students, teacher, data, recipe, path, seed=1)
    teacher.fc.bias.data += 1  # other teacher weights
    with pytest.raises(DasError, match="teacher_weights"):
        run(students, teacher, data, recipe, path)
    assert path.read_text() == before


def test_a_cut_last_line_is_dropped_and_that_student_trained_again(tmp_path, data, teacher, students, recipe) -> None:
    path = tmp_path / "population.jsonl"
    first = run(students[:2], teacher, data, recipe, path)
    text = path.read_text()
    path.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 20])  # the second record cut short by a kill
    again = run(students[:2], teacher, data, recipe, path)
    assert again == [first[0], {**first[1], "date": again[1]["date"], "seconds_distilled": again[1]["seconds_distilled"],
                                "seconds_alone": again[1]["seconds_alone"]}]
    assert len(path.read_text().splitlines()) == 3


def test_a_rerun_gives_the_same_figures_whatever_the_order(tmp_path, data, teacher, students, recipe) -> None:
    figures = ("distilled_acc", "alone_acc", "gain", "params", "flops", "init_digest")
    first = run(students, teacher, data, recipe, tmp_path / "a.jsonl")
    second = run(students[::-1], teacher, data, recipe, tmp_path / "b.jsonl")[::-1]
    assert [[r[k] for k in figures] for r in first] == [[r[k] for k in figures] for r in second]


def test_a_file_that_is_not_a_results_file_is_refused(tmp_path, data, teacher, students, recipe) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text("hello\n")
    with pytest.raises(DasError, match="not a results file"):
        run(students[:1], teacher, data, recipe, path)


def test_the_teacher_cache_is_reused_only_for_the_same_teacher_data_and_views(tmp_path, data, teacher, students, recipe) -> None:
    lines: list[str] = []
    train = lambda path, **kw: train_population(students[:1], teacher, data, recipe, tmp_path / path, progress=False,  # noqa: E731
                                                log=lines.append, keep_cache=True, **kw)
    train_population(students[:1], teacher, data, recipe, tmp_path / "freed.jsonl", progress=False, log=lines.append)
    assert population_module._last_cache is None  # not kept unless asked: a calibration frees it before its search
    lines.clear()
    first = train("a.jsonl")
    second = train("b.jsonl")  # a second results file, same teacher, data and views: the cache is not built again
    assert [(r["distilled_acc"], r["alone_acc"]) for r in first] == [(r["distilled_acc"], r["alone_acc"]) for r in second]
    train("c.jsonl", seed=1)  # other views: built again
    teacher.fc.bias.data += 1  # other teacher weights: built again
    train("d.jsonl")
    assert ["reused" in line for line in lines] == [False, True, False, False]
