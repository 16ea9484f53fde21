"""The finalist race: rungs, halving on validation accuracy, the same run as training straight, resume after a kill."""

from __future__ import annotations

import pytest

from das.calibrate import Recipe
from das.calibrate import race as race_module
from das.calibrate.race import run_race, rung_epochs
from das.calibrate.teacher_cache import build_teacher_cache, cached_modules
from das.calibrate.trainer import init_student, train_student
from das.errors import DasError
from das.features import feature_points


@pytest.mark.parametrize(("n", "epochs", "eta", "rungs"), [
    (8, 8, 2, [1, 2, 4, 8]),
    (9, 3, 2, [1, 2, 3]),  # too short for 4 halvings: repeated rungs merge
    (1, 5, 2, [5]),
    (9, 9, 3, [1, 3, 9]),
    (5, 12, 2, [2, 3, 6, 12]),
])
def test_rungs(n, epochs, eta, rungs):
    assert rung_epochs(n, epochs, eta) == rungs


@pytest.mark.parametrize(("n", "epochs", "eta"), [(0, 3, 2), (3, 0, 2), (3, 3, 1)])
def test_bad_rungs_are_one_line(n, epochs, eta):
    with pytest.raises(DasError, match="a race needs"):
        rung_epochs(n, epochs, eta)


@pytest.fixture
def cache(data, teacher):
    recipe = Recipe(epochs=2, batch_size=16)
    example = data.normalise(data.train.images[:2])
    return build_teacher_cache(teacher, data, cached_modules(recipe.feature_pairs, feature_points(teacher, example)), (), 1, 0)


def race(students, cache, data, tmp_path, **kw):
    return run_race(students, cache=cache, data=data, recipe=Recipe(epochs=2, batch_size=16), num_classes=10,
                    directory=tmp_path, settings={"teacher": "tiny"}, progress=False, log=lambda _: None, **kw)


def test_halving_keeps_the_best_and_the_winner_is_a_straight_run(students, cache, data, tmp_path):
    result = race(students, cache, data, tmp_path)
    assert result.rungs == (1, 2)
    first = {str(f.spec): f.accuracies[0][1] for f in result.finalists}
    went_on = [f for f in result.finalists if f.epochs == 2]
    dropped = [f for f in result.finalists if f.epochs == 1]
    assert len(went_on) == 2 and len(dropped) == 1
    assert min(first[str(f.spec)] for f in went_on) >= first[str(dropped[0].spec)]
    assert result.winner.last_acc == max(f.last_acc for f in went_on)
    straight = train_student(init_student(lambda: result.winner.spec.build(10), 0), cache, data, Recipe(epochs=2, batch_size=16), 0, True)
    assert result.winner.last_acc == straight.acc  # paused at rung 1, continued from its saved state: the same run
    assert result.flop_epochs == sum(f.flops * f.epochs for f in result.finalists)
    assert not list((tmp_path / "state").glob("*.pt"))


def test_a_killed_race_resumes_to_the_same_winner(students, cache, data, tmp_path, monkeypatch):
    whole = race(students, cache, data, tmp_path / "whole")
    calls = {"n": 0}
    original = race_module._train_to

    def killed_on_the_fourth(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(*args, **kw)

    monkeypatch.setattr(race_module, "_train_to", killed_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        race(students, cache, data, tmp_path / "killed")
    monkeypatch.setattr(race_module, "_train_to", original)
    again = race(students, cache, data, tmp_path / "killed")
    assert str(again.winner.spec) == str(whole.winner.spec)
    assert [f.accuracies for f in again.finalists] == [f.accuracies for f in whole.finalists]

    def no_training(*args, **kw):
        raise AssertionError("a finished race trains nothing")

    monkeypatch.setattr(race_module, "_train_to", no_training)
    assert race(students, cache, data, tmp_path / "killed").winner.spec == whole.winner.spec


def test_a_race_with_other_settings_is_refused(students, cache, data, tmp_path):
    race(students[:2], cache, data, tmp_path)
    with pytest.raises(DasError, match="other settings"):
        race(students[1:], cache, data, tmp_path)
    with pytest.raises(DasError, match="distinct"):
        race([students[0], students[0]], cache, data, tmp_path / "dup")


def test_every_finalist_diverging_keeps_the_first_and_says_so(students, cache, data, tmp_path):
    from das.distill.optim import OptimConfig

    lines = []
    result = run_race(students, cache=cache, data=data, recipe=Recipe(epochs=2, batch_size=16, optim=OptimConfig(lr=1e12)),
                      num_classes=10, directory=tmp_path, settings={}, progress=False, log=lines.append)
    assert all(f.diverged for f in result.finalists)
    assert result.winner.spec == students[0]
    assert "every finalist diverged" in result.note and any("diverged" in line for line in lines)
