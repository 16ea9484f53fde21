"""Optimisers and schedules from config: the right groups decay, warmup ramps, milestones fire,
bad values are one line before training; and top-5 is counted as by hand."""

from __future__ import annotations

import inspect
import math
from dataclasses import fields

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from das.data import DasDataModule
from das.distill import DistillModule
from das.distill.module import topk_accuracy
from das.distill.optim import OPTIMIZERS, SCHEDULES, OptimConfig, build_optimizer, build_scheduler, param_groups
from das.errors import DasError

TINY = "tests.tinynets:TinyNet"


class Net(nn.Module):
    """One of each kind of parameter: conv with bias, BatchNorm, GroupNorm, a 2-d LayerNorm, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.ln = nn.LayerNorm([2, 2])  # 2-d weight: found by type, not by ndim
        self.fc = nn.Linear(4, 3)
        self.frozen = nn.Linear(4, 3).requires_grad_(False)


def groups_by_id(groups: list[dict]) -> dict[int, float]:
    return {id(p): g["weight_decay"] for g in groups for p in g["params"]}


def test_norm_layers_and_biases_are_not_decayed() -> None:
    net = Net()
    decay = groups_by_id(param_groups([net], weight_decay=0.1))
    off = [net.conv.bias, net.bn.weight, net.bn.bias, net.gn.weight, net.gn.bias, net.ln.weight, net.ln.bias, net.fc.bias]
    assert all(decay[id(p)] == 0.0 for p in off)
    assert decay[id(net.conv.weight)] == 0.1 and decay[id(net.fc.weight)] == 0.1
    assert len(decay) == len([p for p in net.parameters() if p.requires_grad])  # frozen params left out


def test_decay_norm_and_bias_decays_everything() -> None:
    net = Net()
    groups = param_groups([net], weight_decay=0.1, decay_norm_and_bias=True)
    assert len(groups) == 1 and set(groups_by_id(groups).values()) == {0.1}
    assert len(groups[0]["params"]) == 10  # all but the frozen layer


def test_the_module_groups_student_and_projectors() -> None:
    module = DistillModule(student=TINY, teacher="tests.tinynets:wide_tiny_net", input_size=(3, 8, 8), decay_norm_and_bias=True)
    groups = param_groups([module.student, module.projectors], 0.1, True)
    assert {id(p) for p in module.projectors.parameters()} <= set(groups_by_id(groups))
    assert not {id(p) for p in module.teacher.parameters()} & set(groups_by_id(groups))


def lrs(cfg: OptimConfig, total: int, per_epoch: float) -> list[float]:
    """The learning rate each of the ``total`` optimizer steps uses, driving the schedule by hand."""
    optimizer = build_optimizer([{"params": [nn.Parameter(torch.zeros(1))], "weight_decay": 0.0}], cfg)
    scheduler = build_scheduler(optimizer, cfg, total, per_epoch)
    out = []
    for _ in range(total):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_warmup_ramps_linearly_then_cosine_runs_to_zero() -> None:
    cfg = OptimConfig(lr=0.1, warmup_epochs=0.5)  # 4 steps of 8 per epoch
    got = lrs(cfg, total=40, per_epoch=8)
    assert got[:4] == pytest.approx([0.1 * k / 5 for k in range(1, 5)])
    assert got[4:] == pytest.approx([0.05 * (1 + math.cos(math.pi * j / 36)) for j in range(36)])


def test_without_warmup_cosine_is_pytorchs_own_step_for_step() -> None:
    """The default schedule, bit for bit as before options existed (resume and README figures rely on it)."""
    param = nn.Parameter(torch.zeros(1))
    reference = torch.optim.SGD([param], lr=0.05, momentum=0.9, nesterov=True)
    ref_sched = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=30)
    expected = []
    for _ in range(30):
        expected.append(reference.param_groups[0]["lr"])
        reference.step()
        ref_sched.step()
    assert lrs(OptimConfig(), 30, 10) == expected


@pytest.mark.parametrize("warmup", [0.0, 1.0])
def test_step_schedule_multiplies_by_gamma_at_each_milestone_epoch(warmup) -> None:
    got = lrs(OptimConfig(lr=0.2, schedule="step", milestones=(2, 4), gamma=0.5, warmup_epochs=warmup), total=60, per_epoch=10)
    assert got[10:20] == pytest.approx([0.2] * 10)  # milestones count epochs from the run's start, warmup or not
    assert got[20:40] == pytest.approx([0.1] * 20) and got[40:] == pytest.approx([0.05] * 20)
    if warmup:
        assert got[:10] == pytest.approx([0.2 * k / 11 for k in range(1, 11)])


def test_constant_schedule_holds_the_peak_after_a_fractional_warmup() -> None:
    got = lrs(OptimConfig(lr=0.3, schedule="constant", warmup_epochs=0.25), total=20, per_epoch=8)  # 2 warmup steps
    assert got == pytest.approx([0.1, 0.2] + [0.3] * 18)


@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
@pytest.mark.parametrize("schedule", SCHEDULES.names())
def test_every_optimizer_and_schedule_trains_a_step(optimizer, schedule) -> None:
    milestones = (1,) if SCHEDULES.meta(schedule).get("milestones") else None
    cfg = OptimConfig(optimizer=optimizer, schedule=schedule, milestones=milestones, warmup_epochs=0.5)
    net = Net()
    opt = build_optimizer(param_groups([net], cfg.weight_decay), cfg)
    sched = build_scheduler(opt, cfg, total_steps=8, steps_per_epoch=4)
    before = net.fc.weight.detach().clone()
    net.fc(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched.step()
    assert not torch.equal(before, net.fc.weight) and all(math.isfinite(g["lr"]) and g["lr"] > 0 for g in opt.param_groups)


def test_adamw_is_adamw_with_the_given_betas_and_decay() -> None:
    cfg = OptimConfig(optimizer="adamw", lr=1e-3, betas=(0.8, 0.99), weight_decay=0.05)
    opt = build_optimizer(param_groups([Net()], cfg.weight_decay), cfg)
    assert type(opt) is torch.optim.AdamW and opt.defaults["betas"] == (0.8, 0.99) and opt.defaults["lr"] == 1e-3
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]


@pytest.mark.parametrize(("momentum", "nesterov", "expected"), [(0.9, True, True), (0.9, False, False), (0.0, True, False)])
def test_sgd_is_nesterov_when_asked_and_possible(momentum, nesterov, expected) -> None:
    opt = build_optimizer(param_groups([Net()], 0.0), OptimConfig(momentum=momentum, nesterov=nesterov))
    assert type(opt) is torch.optim.SGD and opt.defaults["nesterov"] is expected and opt.defaults["momentum"] == momentum


def test_optim_defaults_are_the_modules_defaults() -> None:
    params = inspect.signature(DistillModule.__init__).parameters
    for f in fields(OptimConfig):
        default = params[f.name].default
        assert (tuple(default) if isinstance(default, list) else default) == f.default, f.name


@pytest.mark.parametrize(("bad", "expected"), [
    ({"optimizer": "adam"}, "unknown optimizer 'adam': did you mean 'adamw'"),
    ({"schedule": "cos"}, "unknown LR schedule 'cos'.*cosine"),
    ({"lr": -0.1}, r"lr=-0.1 must be a finite number > 0"),
    ({"lr": float("nan")}, r"lr=nan must be"),
    ({"weight_decay": -1e-4}, r"weight_decay=-0.0001 must be .* >= 0"),
    ({"momentum": 1.0}, r"momentum=1.0 must be in \[0, 1\)"),
    ({"betas": (0.9, 1.5)}, r"betas=\[0.9, 1.5\] must be two numbers in \[0, 1\)"),
    ({"warmup_epochs": -1.0}, r"warmup_epochs=-1.0 must be .* >= 0"),
    ({"schedule": "step", "milestones": [5, 3]}, r"milestones=\[5, 3\] must be strictly increasing"),
    ({"schedule": "step", "milestones": [0, 3]}, r"milestones=\[0, 3\] must be strictly increasing whole epochs > 0"),
    ({"schedule": "step", "milestones": [3], "warmup_epochs": 3.0}, r"milestones=\[3\] must all come after warmup_epochs=3.0"),
    ({"schedule": "step"}, "schedule 'step' needs milestones"),
    ({"milestones": [3]}, r"milestones=\[3\] apply only to schedule 'step', not 'cosine'"),
    ({"schedule": "step", "milestones": [3], "gamma": 0.0}, r"gamma=0.0 must be in \(0, 1\]"),
    ({"schedule": "step", "milestones": [3], "gamma": 2.0}, r"gamma=2.0 must be in \(0, 1\]"),
])
def test_bad_settings_fail_in_one_line_when_the_module_is_built(bad, expected) -> None:
    with pytest.raises(DasError, match=expected) as err:
        DistillModule(student=TINY, input_size=(3, 8, 8), **bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("warmup", [5.0, 6.5])
def test_a_warmup_as_long_as_the_run_is_refused(warmup) -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(DasError, match=f"warmup_epochs={warmup} is .* steps but the whole run has 50") as err:
        build_scheduler(optimizer, OptimConfig(warmup_epochs=warmup), total_steps=50, steps_per_epoch=10)
    assert "\n" not in str(err.value)


class RecordLR(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_lightning_steps_the_warmup_per_optimizer_step_in_epochs(tmp_path) -> None:
    """4 batches an epoch, 2 epochs, half an epoch of warmup: 2 warmup steps, then 6 of cosine."""
    module = DistillModule(student=TINY, input_size=(3, 8, 8), lr=0.06, warmup_epochs=0.5)
    record = RecordLR()
    trainer = L.Trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=0, default_root_dir=tmp_path, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        accelerator="cpu", callbacks=[record])
    trainer.fit(module, datamodule=DasDataModule(dataset="digits", image_size=8, batch_size=16, augment=[]))
    assert record.lrs == pytest.approx([0.02, 0.04] + [0.03 * (1 + math.cos(math.pi * j / 6)) for j in range(6)])


def test_topk_accuracy_counts_by_hand() -> None:
    logits = torch.tensor([
        [9.0, 8, 7, 6, 5, 4],  # target 0: top-1
        [9.0, 8, 7, 6, 5, 4],  # target 4: 5th largest, top-5 only
        [9.0, 8, 7, 6, 5, 4],  # target 5: 6th, neither
        [1.0, 2, 3, 4, 5, 6],  # target 2: 4th largest, top-5 only
    ])
    y = torch.tensor([0, 4, 5, 2])
    assert topk_accuracy(logits, y, 1).item() == 0.25 and topk_accuracy(logits, y, 5).item() == 0.75
    assert topk_accuracy(logits[:, :3], torch.tensor([0, 1, 2, 2]), 5).item() == 1.0  # 3 classes: top-3


def test_validation_logs_top1_and_top5_as_fractions(tmp_path) -> None:
    module = DistillModule(student=TINY, input_size=(3, 8, 8), num_classes=6)
    module.student = nn.Identity()  # the "images" below are the logits themselves
    logits = torch.tensor([[9.0, 8, 7, 6, 5, 4]] * 3 + [[1.0, 2, 3, 4, 5, 6]])
    loader = DataLoader(TensorDataset(logits, torch.tensor([0, 4, 5, 2])), batch_size=4)
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    metrics = trainer.validate(module, dataloaders=loader, verbose=False)[0]
    assert metrics["val/acc"] == 0.25 and metrics["val/top5"] == 0.75
