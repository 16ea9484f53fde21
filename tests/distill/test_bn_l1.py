"""The ``bn_l1`` loss (network slimming's sparsity penalty): λ·sign(γ) on every BatchNorm scale,
kept at its weight with or without a teacher, logged like the other terms."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from das.data import DasDataModule
from das.distill import LOSSES, DistillModule
from das.distill.losses import bn_weights
from das.errors import DasError
from tests.tinynets import TinyNet, batch

TEACHER = "tests.tinynets:TinyNet"
LAMBDA = 1e-2

pytestmark = pytest.mark.usefixtures("one_thread")


def bns(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def signed_gammas(model: nn.Module) -> nn.Module:
    """γ of both signs and exact zeros, so sign(γ) takes all three values."""
    for bn in bns(model):
        bn.weight.data = torch.linspace(-1.0, 1.0, bn.num_features)
        bn.weight.data[::3] = 0.0
    return model


def test_the_penalty_is_the_l1_norm_and_its_gradient_is_sign_gamma() -> None:
    model = signed_gammas(TinyNet())
    penalty = LAMBDA * LOSSES.get("bn_l1")(bn_weights(model))
    assert torch.isclose(penalty, LAMBDA * sum(bn.weight.abs().sum() for bn in bns(model)))
    penalty.backward()
    for bn in bns(model):
        assert torch.equal(bn.weight.grad, LAMBDA * torch.sign(bn.weight.detach()))
        assert bn.bias.grad is None  # β is not penalised


@pytest.mark.parametrize("teacher", [None, TEACHER])
def test_the_module_adds_lambda_sign_gamma_to_the_gradient_of_every_gamma(teacher) -> None:
    """Same student, same batch, with and without bn_l1: the γ gradients differ by exactly λ·sign(γ), nothing else moves."""
    grads = []
    for losses in ({"ce": 1.0, "kd": 1.0}, {"ce": 1.0, "kd": 1.0, "bn_l1": LAMBDA}):
        torch.manual_seed(0)
        module = DistillModule(student=TEACHER, teacher=teacher, input_size=(3, 8, 8), losses=losses)
        signed_gammas(module.student).eval()  # eval: both runs normalise with the same statistics
        _, values = module.compute_losses(*batch(size=8))
        values.total.backward()
        grads.append({n: p.grad.clone() for n, p in module.student.named_parameters()})
    plain, penalised = grads
    gammas = {f"{n}.weight": bn.weight.detach() for n, bn in module.student.named_modules() if isinstance(bn, nn.BatchNorm2d)}
    for name, grad in penalised.items():
        extra = LAMBDA * torch.sign(gammas[name]) if name in gammas else torch.zeros_like(grad)
        torch.testing.assert_close(grad - plain[name], extra, rtol=0, atol=1e-7)


def test_the_alone_baseline_keeps_bn_l1_at_its_weight() -> None:
    """ce takes kd's weight alone (the baseline's step-size rule); the penalty is λ in both runs, not scaled."""
    losses = {"ce": 0.5, "kd": 0.5, "cosine": 1.0, "bn_l1": 1e-4}
    alone = DistillModule(student=TEACHER, input_size=(3, 8, 8), losses=losses)
    assert {t.name: t.weight for t in alone.terms} == {"ce": 1.0, "bn_l1": 1e-4}
    distilled = DistillModule(student=TEACHER, teacher=TEACHER, input_size=(3, 8, 8), losses=losses)
    assert {t.name: t.weight for t in distilled.terms} == {"ce": 0.5, "kd": 0.5, "cosine": 1.0, "bn_l1": 1e-4}


def test_bn_l1_alone_cannot_train_without_a_label_term() -> None:
    with pytest.raises(DasError, match="no term that trains without a teacher"):
        DistillModule(student=TEACHER, input_size=(3, 8, 8), losses={"kd": 1.0, "bn_l1": 1e-4})


def test_bn_l1_is_logged_like_the_other_terms(tmp_path) -> None:
    module = DistillModule(student=TEACHER, input_size=(3, 8, 8), losses={"ce": 1.0, "bn_l1": 1e-4})
    trainer = L.Trainer(max_steps=2, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=1, accelerator="cpu")
    trainer.fit(module, datamodule=DasDataModule(dataset="digits", image_size=8, batch_size=16, augment=[]))
    logged = trainer.callback_metrics
    assert {"train/ce", "train/bn_l1"} <= set(logged)
    assert logged["train/bn_l1"] == pytest.approx(bn_weights(module.student).abs().sum().item(), rel=1e-2)


def no_batchnorm(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def test_a_student_without_batchnorm_is_refused_when_built() -> None:
    with pytest.raises(DasError, match="has no affine BatchNorm; drop bn_l1") as err:
        DistillModule(student="tests.distill.test_bn_l1:no_batchnorm", input_size=(3, 8, 8), losses={"ce": 1.0, "bn_l1": 1e-4})
    assert "\n" not in str(err.value)
