"""StudentRun: a run paused after any epoch, in memory or through a saved state, equals one never paused."""

from __future__ import annotations

import io

import torch

from das.calibrate import Recipe
from das.calibrate.teacher_cache import build_teacher_cache, cached_modules
from das.calibrate.trainer import StudentRun, init_student, train_student
from das.features import feature_points


def _cache(teacher, data, recipe):
    example = data.normalise(data.train.images[:2])
    return build_teacher_cache(teacher, data, cached_modules(recipe.feature_pairs, feature_points(teacher, example)), (), 1, 0)


def test_paused_runs_equal_an_uninterrupted_one(data, teacher, students):
    recipe = Recipe(epochs=3, batch_size=16)
    cache = _cache(teacher, data, recipe)
    spec = students[0]
    build = lambda: init_student(lambda: spec.build(10), 0)  # noqa: E731
    straight = train_student(build(), cache, data, recipe, 0, True)

    paused = StudentRun(build(), cache, data, recipe, 0, True)
    paused.train_epochs(1)
    mid_acc = paused.evaluate()
    torch.manual_seed(123)  # whatever runs between rungs must not leak into the run
    torch.rand(10)
    paused.train_epochs(1)
    buffer = io.BytesIO()
    torch.save(paused.state_dict(), buffer)
    buffer.seek(0)
    resumed = StudentRun(build(), cache, data, recipe, 0, True)  # a fresh process: rebuilt, then loaded
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    assert resumed.epoch == 2 and not resumed.finished
    resumed.train_epochs(5)  # only one epoch is left in the schedule
    assert resumed.finished and resumed.epoch == 3
    result = resumed.result()
    assert result.final_digest == straight.final_digest
    assert result.acc == straight.acc
    assert 0.0 <= mid_acc <= 100.0


def test_alone_runs_pause_too(data, teacher, students):
    recipe = Recipe(epochs=2, batch_size=16)
    cache = _cache(teacher, data, recipe)
    build = lambda: init_student(lambda: students[1].build(10), 1)  # noqa: E731
    straight = train_student(build(), cache, data, recipe, 1, False)
    run = StudentRun(build(), cache, data, recipe, 1, False)
    run.train_epochs(1)
    run.train_epochs(1)
    assert run.result().final_digest == straight.final_digest
