"""Distilled and alone runs differ only in the objective, which is DistillModule's on cached teacher outputs."""

from __future__ import annotations

import copy

import pytest
import torch

from das.calibrate import CachedDistillObjective, Recipe, build_teacher_cache, train_pair
from das.calibrate import trainer as trainer_module
from das.calibrate.teacher_cache import TeacherCache
from das.distill import DistillModule, LossSpec
from das.distill.module import DEFAULT_LOSSES
from das.distill.optim import OptimConfig
from das.errors import DasError
from das.features import FeatureTap


def test_distilled_and_alone_start_from_identical_weights_and_batches(data, teacher, students, recipe, monkeypatch) -> None:
    cache = build_teacher_cache(teacher, data, ["body"])
    student = students[0].build(10)
    original = copy.deepcopy(student.state_dict())
    starts, batches = [], []
    real_train, real_batch = trainer_module.train_student, TeacherCache.batch

    def spy_train(model, *args, **kwargs):
        starts.append({k: v.clone() for k, v in model.state_dict().items()})
        batches.append([])
        return real_train(model, *args, **kwargs)

    def spy_batch(self, index, view):
        batches[-1].append(index.clone())
        return real_batch(self, index, view)

    monkeypatch.setattr(trainer_module, "train_student", spy_train)
    monkeypatch.setattr(TeacherCache, "batch", spy_batch)
    result = train_pair(student, cache, data, recipe, seed=0)
    assert len(starts) == 2
    for key, value in original.items():  # both runs start from the student as given, which is left untouched
        assert torch.equal(starts[0][key], value) and torch.equal(starts[1][key], value)
        assert torch.equal(student.state_dict()[key], value)
    assert result.distilled.init_digest == result.alone.init_digest
    assert len(batches[0]) == 4 and all(torch.equal(a, b) for a, b in zip(batches[0], batches[1], strict=True))


@pytest.mark.parametrize("distill", [True, False])
def test_objective_is_distill_modules_loss_on_cached_outputs(data, students, distill) -> None:
    module = DistillModule(student=students[0].to_json(), teacher="tests.tinynets:TinyNet" if distill else None,
                           input_size=(3, 16, 16))
    assert module.hparams.losses == DEFAULT_LOSSES
    teacher = module.teacher if distill else copy.deepcopy(module.student)  # alone, the cache's teacher outputs go unread
    cache = build_teacher_cache(teacher, data, [p.teacher.module for p in module.pairs])
    objective = CachedDistillObjective(LossSpec.from_config(DEFAULT_LOSSES), module.pairs, distill)
    objective.projectors.load_state_dict(module.projectors.state_dict())
    assert [t.name for t in objective.terms] == [t.name for t in module.terms]
    batch = cache.batch(torch.arange(16), torch.zeros(16, dtype=torch.int64))
    _, expected = module.compute_losses(batch.images, batch.labels)
    with FeatureTap(module.student, objective.student_modules) as tap:
        logits = module.student(batch.images)
    got = objective(logits, [tap.outputs[n] for n in objective.student_modules], batch)
    assert set(got.terms) == set(expected.terms) == ({"ce", "kd", "cosine"} if distill else {"ce"})
    torch.testing.assert_close(got.total, expected.total)


def test_recipe_defaults_are_distill_modules() -> None:
    recipe = Recipe(epochs=1)
    assert recipe.losses == DEFAULT_LOSSES and recipe.feature_pairs == "stages" and recipe.optim == OptimConfig()
    assert recipe.to_dict()["optim"]["lr"] == 0.05


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"losses": {"ce": 1.0}}, "no term that reads the teacher"),
    ({"losses": {"kd": 1.0}}, "no term that trains without a teacher"),
    ({"views": 2}, "needs augment"),
    ({"epochs": 0}, "epochs=0"),
])
def test_bad_recipes_are_refused(kwargs, match) -> None:
    with pytest.raises(DasError, match=match):
        Recipe(**{"epochs": 1, **kwargs})


def test_a_pair_trained_twice_ends_with_the_same_weights(data, teacher, students, recipe) -> None:
    cache = build_teacher_cache(teacher, data, ["body"], augment=("crop", "flip"), views=2)
    student = students[1].build(10)
    first, second = (train_pair(student, cache, data, recipe, seed=0, channels_last=True) for _ in range(2))
    assert first.distilled.final_digest != first.alone.final_digest != first.distilled.init_digest
    for a, b in ((first.distilled, second.distilled), (first.alone, second.alone)):
        assert (a.final_digest, a.acc) == (b.final_digest, b.acc)


@pytest.mark.parametrize("distill", [True, False])
def test_bn_l1_regulariser_reads_the_student_in_both_runs(data, teacher, students, distill) -> None:
    """Network slimming's L1 on BN scales (issue 13) trains in a population too: weight × Σ|γ| joins the total."""
    losses = {"ce": 0.5, "kd": {"weight": 0.5, "temperature": 4.0}, "bn_l1": 1e-2}
    cache = build_teacher_cache(teacher, data, [])
    student = students[0].build(10)
    objective = CachedDistillObjective(LossSpec.from_config(losses), [], distill)
    batch = cache.batch(torch.arange(8), torch.zeros(8, dtype=torch.int64))
    logits = student(batch.images)
    got = objective(logits, [], batch, student)
    gammas = torch.cat([m.weight for m in student.modules()
                        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.weight is not None])
    torch.testing.assert_close(got.terms["bn_l1"], gammas.abs().sum())
    rest = sum(t.weight * got.terms[t.name] for t in objective.terms if t.name != "bn_l1")
    torch.testing.assert_close(got.total, rest + 1e-2 * gammas.abs().sum())


def test_a_population_run_trains_with_bn_l1(data, teacher, students, recipe) -> None:
    """train_pair hands the student to the objective: without it bn_l1 has no scales to read and the run fails."""
    slimming = Recipe(epochs=1, batch_size=16, losses={"ce": 0.5, "kd": {"weight": 0.5, "temperature": 4.0}, "bn_l1": 1e-4})
    cache = build_teacher_cache(teacher, data, [])
    result = train_pair(students[0].build(10), cache, data, slimming, seed=0)
    assert not result.distilled.diverged and not result.alone.diverged
