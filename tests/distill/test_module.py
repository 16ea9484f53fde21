"""The DistillModule keeps its teacher frozen and out of the optimizer and the checkpoint."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from das.data import DasDataModule
from das.distill import DistillModule
from das.errors import DasError

TEACHER = "tests.tinynets:TinyNet"


def tiny_data() -> DasDataModule:
    return DasDataModule(dataset="digits", image_size=8, batch_size=16, augment=[])


def trainer(tmp_path, steps: int = 2) -> L.Trainer:
    return L.Trainer(max_steps=steps, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=1, limit_test_batches=1, accelerator="cpu")


def test_teacher_is_frozen_and_untouched_by_training(tmp_path) -> None:
    module = DistillModule(student=TEACHER, teacher=TEACHER, input_size=(3, 8, 8))
    before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
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


def test_without_teacher_it_trains_alone(tmp_path) -> None:
    module = DistillModule(student=TEACHER, input_size=(3, 8, 8))
    trainer(tmp_path).fit(module, datamodule=tiny_data())
    assert module.teacher is None and isinstance(module.projector, torch.nn.Identity)


def test_projector_appears_when_widths_differ() -> None:
    module = DistillModule(student=TEACHER, teacher="tests.tinynets:wide_tiny_net", input_size=(3, 8, 8))
    assert isinstance(module.projector, torch.nn.Conv2d)
    assert module.projector.in_channels == 8 and module.projector.out_channels == 16


@pytest.mark.parametrize("bad", [{"kd_temperature": 0.0}, {"lr": -1.0}, {"feature_scale": -0.5}])
def test_bad_hyperparameters_are_named(bad) -> None:
    with pytest.raises(DasError, match=next(iter(bad))):
        DistillModule(student=TEACHER, **bad)
