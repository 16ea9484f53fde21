"""The DistillModule trains on its loss config over its feature pairs, and keeps its teacher frozen,
out of the optimizer and out of the checkpoint."""

from __future__ import annotations

import shutil

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from das.data import DasDataModule
from das.distill import DistillModule, cosine_feature_loss, fitnet_loss, kd_loss, relation_loss
from das.errors import DasError
from das.features import FeatureTap
from tests.core.test_models import write_search
from tests.tinynets import batch

TEACHER = "tests.tinynets:TinyNet"


def tiny_data() -> DasDataModule:
    return DasDataModule(dataset="digits", image_size=8, batch_size=16, augment=[])


def trainer(tmp_path, steps: int = 2) -> L.Trainer:
    return L.Trainer(max_steps=steps, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=1, limit_test_batches=1, accelerator="cpu")


@pytest.mark.parametrize(("student", "teacher", "pairs"), [
    (TEACHER, TEACHER, "final"),
    ("resnet20", "resnet56", "stages"),  # three pairs, BatchNorm in every block of the teacher
])
def test_teacher_is_frozen_and_untouched_by_training(tmp_path, student, teacher, pairs) -> None:
    module = DistillModule(student=student, teacher=teacher, input_size=(3, 8, 8), feature_pairs=pairs,
                           losses={"ce": 1.0, "kd": 1.0, "cosine": 1.0, "relation": 1.0, "fitnet": 1.0})
    before = {k: v.clone() for k, v in module.teacher.state_dict().items()}  # BN running statistics included
    trainer(tmp_path).fit(module, datamodule=tiny_data())
    assert not module.teacher.training
    assert all(not p.requires_grad for p in module.teacher.parameters())
    for key, value in module.teacher.state_dict().items():
        assert torch.equal(value, before[key]), f"teacher {key} moved"
    optimised = {id(p) for group in module.optimizers().optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in module.teacher.parameters()}


def test_no_weight_decay_on_batchnorm_and_biases(tmp_path) -> None:
    module = DistillModule(student=TEACHER, teacher=TEACHER, input_size=(3, 8, 8), weight_decay=0.1)
    trainer(tmp_path, 1).fit(module, datamodule=tiny_data())
    groups = module.optimizers().optimizer.param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    bn = module.student.body[1]
    assert id(bn.weight) not in decayed and id(bn.bias) not in decayed and id(module.student.fc.bias) not in decayed
    assert id(module.student.fc.weight) in decayed


def test_checkpoint_omits_the_teacher_and_reloads(tmp_path) -> None:
    module = DistillModule(student=TEACHER, teacher=TEACHER, input_size=(3, 8, 8))
    t = trainer(tmp_path)
    t.fit(module, datamodule=tiny_data())
    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["state_dict"]
    assert state and not any(k.startswith("teacher.") for k in state)
    reloaded = DistillModule.load_from_checkpoint(path)
    for key, value in module.student.state_dict().items():
        assert torch.equal(value, reloaded.student.state_dict()[key])


def test_a_leaderboard_row_student_is_stored_as_its_spec_and_reloads_without_the_search(tmp_path) -> None:
    """Like a best_arch.json student: the checkpoint carries the row's ArchSpec, so neither CSV nor study is read again."""
    specs = write_search(tmp_path / "search")
    row = f"{tmp_path / 'search' / 'leaderboard.csv'}#2"
    module = DistillModule(student=row, input_size=(3, 8, 8))
    assert module.hparams.student == row and module.hparams.student_spec == specs[1].to_dict()
    t = trainer(tmp_path, 1)
    t.fit(module, datamodule=tiny_data())
    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    shutil.rmtree(tmp_path / "search")  # no leaderboard, no study.journal
    reloaded = DistillModule.load_from_checkpoint(path)
    assert reloaded.hparams.student_spec == specs[1].to_dict()
    for key, value in module.student.state_dict().items():
        assert torch.equal(value, reloaded.student.state_dict()[key])


def test_without_teacher_it_trains_alone_on_the_label_terms(tmp_path) -> None:
    """A distillation recipe without a teacher is its ce alone, carrying ce's and kd's weight: the baseline's case."""
    module = DistillModule(student=TEACHER, input_size=(3, 8, 8), losses={"ce": {"weight": 0.5, "label_smoothing": 0.1}, "kd": 0.5, "cosine": 1.0})
    assert [t.name for t in module.terms] == ["ce"] and not module.uses_features and not list(module.projectors.parameters())
    x, y = batch(size=8)
    logits, values = module.compute_losses(x, y)
    assert list(values.terms) == ["ce"] and torch.allclose(values.total, F.cross_entropy(logits, y, label_smoothing=0.1))
    trainer(tmp_path).fit(module, datamodule=tiny_data())
    assert module.teacher is None


@pytest.mark.parametrize(("losses", "alone"), [
    ({"ce": 0.5, "kd": 0.5, "cosine": 1.0}, 1.0),  # the convex mix steps like ce 1
    ({"ce": 1.0, "kd": 1.0}, 2.0),  # ce + kd steps like 2 ce
    ({"ce": 0.3, "kd": {"weight": 0.9, "temperature": 2.0}, "fitnet": 5.0, "relation": 2.0}, 1.2),  # feature terms carry no weight over
    ({"ce": 1.0, "cosine": 3.0}, 1.0),  # no kd: ce as given
])
def test_the_baseline_carries_the_logit_terms_weight_on_its_label_terms(losses, alone) -> None:
    """Alone, the ce weight is the sum of the logit terms' weights, so both runs take steps of the same size."""
    module = DistillModule(student=TEACHER, input_size=(3, 8, 8), losses=losses)
    (term,) = module.terms
    assert term.name == "ce" and term.weight == pytest.approx(alone)
    x, y = batch(size=8)
    logits, values = module.compute_losses(x, y)
    assert torch.allclose(values.total, alone * F.cross_entropy(logits, y))


def test_projector_appears_when_widths_differ() -> None:
    module = DistillModule(student=TEACHER, teacher="tests.tinynets:wide_tiny_net", input_size=(3, 8, 8))
    (proj,) = module.projectors.projectors
    assert isinstance(proj, torch.nn.Conv2d) and proj.in_channels == 8 and proj.out_channels == 16
    assert [p.describe() for p in module.pairs] == ["body (8 ch, /1) -> body (16 ch, /1)"]  # "final", the default


def test_training_loss_is_the_weighted_sum_of_the_registered_terms() -> None:
    """Every registered loss at once, checked against the plain loss functions with the module's projector."""
    losses = {"ce": 0.5, "kd": {"weight": 2.0, "temperature": 3.0}, "cosine": {"weight": 0.7, "scale": 2.0}, "fitnet": 0.3, "relation": 1.5}
    module = DistillModule(student=TEACHER, teacher="tests.tinynets:wide_tiny_net", input_size=(3, 8, 8), losses=losses)
    x, y = batch(size=8)
    logits, values = module.compute_losses(x, y)

    with FeatureTap(module.student, ["body"]) as s_tap:
        s_logits = module.student(x)
    with torch.no_grad(), FeatureTap(module.teacher, ["body"]) as t_tap:
        t_logits = module.teacher(x)
    s_map, t_map = s_tap.outputs["body"], t_tap.outputs["body"]
    projected = module.projectors.projectors[0](s_map)
    hand = {
        "ce": F.cross_entropy(s_logits, y),
        "kd": kd_loss(s_logits, t_logits, 3.0),
        "cosine": cosine_feature_loss(projected, t_map, 2.0),
        "fitnet": fitnet_loss(projected, t_map),
        "relation": relation_loss(s_map, t_map),  # raw maps: no projection
    }
    assert torch.allclose(logits, s_logits)
    assert set(values.terms) == set(hand)
    for name, value in hand.items():
        assert torch.allclose(values.terms[name], value), name
    total = 0.5 * hand["ce"] + 2.0 * hand["kd"] + 0.7 * hand["cosine"] + 0.3 * hand["fitnet"] + 1.5 * hand["relation"]
    assert torch.allclose(values.total, total)
    values.total.backward()
    assert module.projectors.projectors[0].weight.grad is not None  # the projector learns


def test_fitting_lowers_the_composed_loss_on_the_batch_it_trains_on(tmp_path) -> None:
    """Lightning's fit optimises compute_losses' total (student and projector): five steps on one batch lower it."""
    module = DistillModule(student=TEACHER, teacher="tests.tinynets:wide_tiny_net", input_size=(3, 8, 8), schedule="constant", lr=0.1)
    x, y = batch(n=16, size=8)

    def total() -> float:
        with torch.no_grad():
            return module.compute_losses(x, y)[1].total.item()

    projector = module.projectors.projectors[0].weight.detach().clone()
    before = total()
    same_batch = DataLoader(TensorDataset(x.repeat(5, 1, 1, 1), y.repeat(5)), batch_size=16)
    trainer(tmp_path, 5).fit(module, train_dataloaders=same_batch)
    assert module.global_step == 5 and module.student.training
    assert total() < 0.95 * before  # 0.78-0.84 × on seeds 0-2
    assert not torch.equal(projector, module.projectors.projectors[0].weight)  # the projector is optimised too


def test_stage_pairs_give_three_pairs_and_feature_losses_average_over_them() -> None:
    module = DistillModule(student="resnet20", teacher="resnet56", input_size=(3, 8, 8), feature_pairs="stages",
                           losses={"cosine": {"weight": 2.0, "scale": 1.0}, "relation": 1.0})
    assert [(p.student.module, p.teacher.module) for p in module.pairs] == [("layer1", "layer1"), ("layer2", "layer2"), ("layer3", "layer3")]
    x, y = batch(n=4, size=8)
    _, values = module.compute_losses(x, y)
    names = ["layer1", "layer2", "layer3"]
    with FeatureTap(module.student, names) as s_tap:
        module.student(x)
    with torch.no_grad(), FeatureTap(module.teacher, names) as t_tap:
        module.teacher(x)
    cos = torch.stack([cosine_feature_loss(s_tap.outputs[n], t_tap.outputs[n], 1.0) for n in names]).mean()
    rel = torch.stack([relation_loss(s_tap.outputs[n], t_tap.outputs[n]) for n in names]).mean()
    assert torch.allclose(values.terms["cosine"], cos) and torch.allclose(values.terms["relation"], rel)
    assert torch.allclose(values.total, 2.0 * cos + rel)
    line = module.describe_pairs()
    assert line.startswith("feature pairs (cosine, relation, averaged over 3): layer1 (16 ch, /1) -> layer1 (16 ch, /1); layer2")


def test_named_pairs_and_no_feature_capture_without_feature_terms() -> None:
    module = DistillModule(student="resnet20", teacher="resnet56", input_size=(3, 8, 8), feature_pairs=[("layer2", "layer3")],
                           losses={"ce": 1.0, "kd": 1.0, "cosine": 0.0})
    assert [p.describe() for p in module.pairs] == ["layer2 (32 ch, /2) -> layer3 (64 ch, /4)"]
    assert not module.uses_features  # cosine at weight 0: no hooks, no maps
    with pytest.raises(DasError, match="valid student names: layer1, layer2, layer3"):
        DistillModule(student="resnet20", teacher="resnet56", input_size=(3, 8, 8), feature_pairs=[("layer9", "layer3")])
    with pytest.raises(DasError, match="feature_pairs='all'"):
        DistillModule(student="resnet20", teacher="resnet56", input_size=(3, 8, 8), feature_pairs="all")


@pytest.mark.parametrize(("bad", "expected"), [
    ({"lr": -1.0}, "lr=-1.0"),
    ({"losses": {"ce": 1.0, "kdd": 1.0}}, "unknown distillation loss 'kdd'.*kd"),
    ({"losses": {"ce": 1.0, "kd": -1.0}}, "loss 'kd' weight=-1.0 must be"),
    ({"losses": {"kd": {"weight": 1.0, "temperature": 0.0}}}, "temperature=0.0 must be > 0"),
    ({"losses": {"ce": 0.0, "kd": 0.0}, "teacher": TEACHER}, "every weight 0, so nothing would train"),
    ({"losses": {"kd": 1.0}}, "no term that trains without a teacher.*add ce"),
])
def test_bad_hyperparameters_are_one_line(bad, expected) -> None:
    with pytest.raises(DasError, match=expected) as err:
        DistillModule(student=TEACHER, input_size=(3, 8, 8), **bad)
    assert "\n" not in str(err.value)


def test_channels_last_is_the_same_maths_in_another_layout(tmp_path) -> None:
    """channels_last changes the memory layout only: same initial weights, same losses and logits to float
    rounding, the same after a training step; its weights and the batches the networks see are channels-last."""
    losses = {"ce": 0.5, "kd": 0.5, "cosine": 1.0, "relation": 1.0}
    modules = {}
    for layout in (False, True):
        torch.manual_seed(0)
        modules[layout] = DistillModule(student="resnet20", teacher="resnet56", input_size=(3, 8, 8), feature_pairs="stages",
                                        losses=losses, channels_last=layout, schedule="constant")
    plain, fast = modules[False], modules[True]
    conv = fast.student.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert plain.student.conv1.weight.is_contiguous()
    seen = []
    hook = fast.student.conv1.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    x, y = batch(n=8, size=8)
    (lp, vp), (lf, vf) = plain.compute_losses(x, y), fast.compute_losses(x, y)
    hook.remove()
    assert seen == [True]
    assert torch.allclose(lp, lf, atol=1e-5) and set(vp.terms) == set(vf.terms)
    for name in vp.terms:
        assert torch.allclose(vp.terms[name], vf.terms[name], atol=1e-5), name
    data = DataLoader(TensorDataset(x.repeat(2, 1, 1, 1), y.repeat(2)), batch_size=8)
    for layout, module in modules.items():
        trainer(tmp_path / str(layout), 2).fit(module, train_dataloaders=data)
    for (name, a), b in zip(plain.student.state_dict().items(), fast.student.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-4), name


def eager_and_compiled() -> dict[bool, DistillModule]:
    """The same TinyNet pair (same initial weights) eager (False) and through torch.compile (True)."""
    modules = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        modules[compiled] = DistillModule(student=TEACHER, teacher=TEACHER, input_size=(3, 8, 8), feature_pairs="final",
                                          losses={"ce": 0.5, "kd": 0.5, "cosine": 1.0}, compile=compiled, schedule="constant")
    return modules


def test_compile_is_the_same_step_and_keeps_the_modules_and_their_keys(tmp_path) -> None:
    """compile runs the student and teacher through torch.compile: the same losses and feature terms as eager
    to float rounding, the same weights after training steps, and a checkpoint whose keys are the eager module's."""
    modules = eager_and_compiled()
    eager, fast = modules[False], modules[True]
    x, y = batch(n=8, size=8)
    (le, ve), (lf, vf) = eager.compute_losses(x, y), fast.compute_losses(x, y)
    assert len(fast._compiled) == 2 and not eager._compiled  # student and teacher, each compiled once
    assert torch.allclose(le, lf, atol=1e-5) and set(ve.terms) == set(vf.terms) == {"ce", "kd", "cosine"}
    for name in ve.terms:
        assert torch.allclose(ve.terms[name], vf.terms[name], atol=1e-5), name
    data = DataLoader(TensorDataset(x.repeat(2, 1, 1, 1), y.repeat(2)), batch_size=8)
    for compiled, module in modules.items():
        trainer(tmp_path / str(compiled), 2).fit(module, train_dataloaders=data)
    assert list(fast.state_dict()) == list(eager.state_dict())  # no "_orig_mod." keys
    for (name, a), b in zip(eager.student.state_dict().items(), fast.student.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-4), name


def test_compiled_forwards_follow_masks_applied_or_replaced_after_they_compiled() -> None:
    """A compiled student keeps no stale weights: masks applied after its first compiled step, and a mask
    replaced in place later (apply_masks sets the buffer), give eager's losses on the masked student."""
    from das.nets.masks import apply_masks
    from das.nets.weights import prunable_weights

    modules = eager_and_compiled()
    eager, fast = modules[False], modules[True]
    x, y = batch(n=8, size=8)
    before = fast.compute_losses(x, y)[0]  # compiles the dense student
    assert len(fast._compiled) == 2
    g = torch.Generator().manual_seed(1)
    for round_ in range(2):  # round 0 registers the masks, round 1 replaces them
        masks = {name: torch.rand(w.shape, generator=g) < 0.5 for name, w in prunable_weights(eager.student).items()}
        for module in modules.values():
            apply_masks(module.student, masks)
        le, lf = eager.compute_losses(x, y)[0], fast.compute_losses(x, y)[0]
        assert torch.allclose(le, lf, atol=1e-5), round_
    assert not torch.allclose(before, lf, atol=1e-3)  # the masks changed the loss, so equality above means something
