"""Decoupled KD (Zhao et al., CVPR 2022) equals the paper's formula and has the properties that define it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from das.cli import USER_ERROR, guarded
from das.distill import command as train
from das.distill.losses import LOSSES, LossInputs, LossSpec, dkd_loss, kd_loss
from das.errors import DasError
from tests.cli.test_train_cli import TINY

DKD = LOSSES.get("dkd")

# Three images, four classes; the labels put the target in the first, a middle and the last column.
STUDENT = [[2.0, 0.5, -1.0, 0.0], [0.3, -0.2, 1.7, 0.9], [-1.5, 2.5, 0.1, 0.4]]
TEACHER = [[3.0, -0.5, 0.5, 1.0], [1.0, 0.0, 2.5, -1.0], [0.0, 1.0, -0.5, 2.0]]
LABELS = [0, 2, 3]


def paper_dkd(student: list[list[float]], teacher: list[list[float]], labels: list[int], alpha: float, beta: float, T: float) -> float:
    """The paper's definition by hand in float64 numpy, one image at a time (no masks, no log-softmax).

    p = softmax(z / T); b = [p_t, Σ_{i≠t} p_i]; p̂_i = p_i / Σ_{j≠t} p_j for i ≠ t;
    TCKD = Σ b^T log(b^T / b^S), NCKD = Σ p̂^T log(p̂^T / p̂^S); DKD = T² · mean(α·TCKD + β·NCKD).
    """
    total = 0.0
    for s_row, t_row, t in zip(student, teacher, labels):
        def split(row: list[float]) -> tuple[np.ndarray, np.ndarray]:
            e = np.exp(np.asarray(row, dtype=np.float64) / T)
            p = e / e.sum()
            rest = np.delete(p, t)
            return np.array([p[t], rest.sum()]), rest / rest.sum()
        b_s, hat_s = split(s_row)
        b_t, hat_t = split(t_row)
        tckd = float(np.sum(b_t * np.log(b_t / b_s)))
        nckd = float(np.sum(hat_t * np.log(hat_t / hat_s)))
        total += alpha * tckd + beta * nckd
    return T**2 * total / len(labels)


def authors_steps(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, alpha: float, beta: float, T: float) -> torch.Tensor:
    """What mdistiller's ``dkd_loss`` (mdistiller/distillers/DKD.py) computes, step by step, written here anew.

    Their label mask is a scatter of ones at the label; ``b`` is the masked sums of the softmax,
    logged with ``torch.log``; NCKD is a softmax after subtracting 1000 from the target's tempered
    logit; each KL is summed (their ``size_average=False``), times T², over the batch size.
    """
    label = torch.zeros_like(s).scatter(1, y[:, None], 1.0)
    def binary(z: torch.Tensor) -> torch.Tensor:
        p = F.softmax(z / T, dim=1)
        return torch.stack([(p * label).sum(1), (p * (1 - label)).sum(1)], dim=1)
    tckd = F.kl_div(torch.log(binary(s)), binary(t), reduction="sum") * T**2 / y.shape[0]
    nckd = F.kl_div(F.log_softmax(s / T - 1000.0 * label, dim=1), F.softmax(t / T - 1000.0 * label, dim=1), reduction="sum") * T**2 / y.shape[0]
    return alpha * tckd + beta * nckd


def tensors(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.tensor(STUDENT, dtype=dtype), torch.tensor(TEACHER, dtype=dtype), torch.tensor(LABELS)


@pytest.mark.parametrize(("alpha", "beta", "T"), [(1.0, 8.0, 4.0), (1.0, 1.0, 1.0), (0.5, 2.0, 2.5), (0.0, 1.0, 4.0), (1.0, 0.0, 4.0)])
def test_dkd_equals_the_paper_formula_by_hand(alpha: float, beta: float, T: float) -> None:
    s, t, y = tensors()
    hand = paper_dkd(STUDENT, TEACHER, LABELS, alpha, beta, T)
    assert hand > 0
    assert DKD(s, t, y, alpha=alpha, beta=beta, temperature=T).item() == pytest.approx(hand, abs=1e-6)
    s32, t32, _ = tensors(torch.float32)
    assert DKD(s32, t32, y, alpha=alpha, beta=beta, temperature=T).item() == pytest.approx(hand, rel=1e-5)


def test_defaults_are_the_papers_cifar100_setting() -> None:
    assert DKD.defaults == {"alpha": 1.0, "beta": 8.0, "temperature": 4.0}
    s, t, y = tensors()
    assert DKD(s, t, y).item() == pytest.approx(paper_dkd(STUDENT, TEACHER, LABELS, 1.0, 8.0, 4.0), abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dkd_equals_the_authors_computation_wherever_theirs_is_finite(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    s, t = 3 * torch.randn(16, 10, generator=g, dtype=dtype), 3 * torch.randn(16, 10, generator=g, dtype=dtype)
    y = torch.randint(0, 10, (16,), generator=g)
    for alpha, beta, T in [(1.0, 8.0, 4.0), (1.0, 2.0, 4.0), (1.0, 0.5, 1.0)]:
        theirs = authors_steps(s, t, y, alpha, beta, T).item()
        assert DKD(s, t, y, alpha=alpha, beta=beta, temperature=T).item() == pytest.approx(theirs, abs=1e-6 if dtype == torch.float64 else 1e-4, rel=1e-6)


def test_a_saturated_student_stays_finite_where_the_log_of_summed_probabilities_does_not() -> None:
    """At T = 1 a float32 student whose label leads by 150 has softmax exactly 0 elsewhere: log(0) in their TCKD."""
    student, teacher, labels = [[150.0, 0.0, 0.0]], [[3.0, 1.0, 0.0]], [0]
    s = torch.tensor(student, requires_grad=True)
    t, y = torch.tensor(teacher), torch.tensor(labels)
    assert authors_steps(s.detach(), t, y, 1.0, 8.0, 1.0).item() == float("inf")
    ours = DKD(s, t, y, alpha=1.0, beta=8.0, temperature=1.0)
    assert ours.item() == pytest.approx(paper_dkd(student, teacher, labels, 1.0, 8.0, 1.0), rel=1e-5)
    ours.backward()
    assert torch.isfinite(s.grad).all()


# ----------------------------------------------------------------------------- the properties that define it


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_kd_is_tckd_plus_one_minus_the_teachers_target_probability_times_nckd(T: float) -> None:
    """The paper's decomposition, KD = TCKD + (1 − p_t^T)·NCKD, image by image (every term at T, times T²)."""
    g = torch.Generator().manual_seed(1)
    s, t = 2 * torch.randn(6, 5, generator=g, dtype=torch.float64), 2 * torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 2])
    p_target = F.softmax(t / T, dim=1).gather(1, y[:, None]).squeeze(1)
    tckd = torch.stack([DKD(s[i:i + 1], t[i:i + 1], y[i:i + 1], alpha=1.0, beta=0.0, temperature=T) for i in range(6)])
    nckd = torch.stack([DKD(s[i:i + 1], t[i:i + 1], y[i:i + 1], alpha=0.0, beta=1.0, temperature=T) for i in range(6)])
    for i in range(6):
        assert kd_loss(s[i:i + 1], t[i:i + 1], T).item() == pytest.approx((tckd[i] + (1 - p_target[i]) * nckd[i]).item(), abs=1e-10)
    # So α = β = 1 is not KD: it adds p_t^T · NCKD, which KD's coupling takes away from a confident teacher.
    both = DKD(s, t, y, alpha=1.0, beta=1.0, temperature=T).item()
    assert both - kd_loss(s, t, T).item() == pytest.approx((p_target * nckd).mean().item(), abs=1e-10)
    assert DKD(s, t, y, alpha=0.3, beta=5.0, temperature=T).item() == pytest.approx((0.3 * tckd + 5.0 * nckd).mean().item(), abs=1e-10)


def test_tckd_sees_only_the_targets_mass_and_nckd_only_the_other_classes() -> None:
    s, t, y = tensors()

    def tckd(student: torch.Tensor) -> float:
        return DKD(student, t, y, alpha=1.0, beta=0.0, temperature=2.0).item()

    def nckd(student: torch.Tensor) -> float:
        return DKD(student, t, y, alpha=0.0, beta=1.0, temperature=2.0).item()

    shuffled = s.clone()  # the non-target logits of each image permuted: p_t unchanged
    for row, label in enumerate(LABELS):
        others = [c for c in range(4) if c != label]
        shuffled[row, others] = s[row, others[1:] + others[:1]]
    assert tckd(shuffled) == pytest.approx(tckd(s), abs=1e-12) and nckd(shuffled) != pytest.approx(nckd(s), abs=1e-3)
    raised = s.clone()  # the target logit moved: p̂ over the other classes unchanged
    raised[torch.arange(3), y] += 2.0
    assert nckd(raised) == pytest.approx(nckd(s), abs=1e-12) and tckd(raised) != pytest.approx(tckd(s), abs=1e-3)


def test_dkd_is_zero_when_the_student_gives_the_teachers_logits() -> None:
    g = torch.Generator().manual_seed(2)
    t = 5 * torch.randn(8, 100, generator=g)
    y = torch.randint(0, 100, (8,), generator=g)
    for alpha, beta, T in [(1.0, 8.0, 4.0), (2.0, 0.5, 1.0), (0.0, 3.0, 0.5)]:
        assert DKD(t.clone(), t, y, alpha=alpha, beta=beta, temperature=T).item() == pytest.approx(0.0, abs=1e-5)
        assert DKD(t + 7.0, t, y, alpha=alpha, beta=beta, temperature=T).item() == pytest.approx(0.0, abs=1e-5)  # softmax is shift-free


def test_gradients_reach_the_student_and_never_the_teacher() -> None:
    s, t = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    y = torch.tensor([0, 5, 2, 2])
    DKD(s, t, y).backward()
    assert t.grad is None and s.grad is not None and s.grad.abs().sum() > 0 and torch.isfinite(s.grad).all()
    inputs = LossInputs(student_logits=s, teacher_logits=t, targets=y)
    s.grad = None
    LossSpec.from_config({"ce": 1.0, "dkd": 1.0})(inputs).total.backward()
    assert t.grad is None and s.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- options and bad input


@pytest.mark.parametrize(("options", "message"), [
    ({"alpha": -1.0}, "option alpha=-1.0 must be >= 0"),
    ({"beta": -0.5}, "option beta=-0.5 must be >= 0"),
    ({"temperature": 0.0}, "option temperature=0.0 must be > 0"),
    ({"temperature": -4}, "option temperature=-4 must be > 0"),
    ({"beta": float("nan")}, "beta=nan must be a finite number"),
    ({"alhpa": 1.0}, "no option 'alhpa': did you mean 'alpha'"),
    ({"gamma": 1.0}, "loss 'dkd' has no option 'gamma'"),
])
def test_bad_options_are_one_line_das_errors(options: dict, message: str) -> None:
    with pytest.raises(DasError, match=message) as err:
        LossSpec.from_config({"ce": 1.0, "dkd": {"weight": 1.0, **options}})
    assert "\n" not in str(err.value)


def test_zero_alpha_and_beta_are_accepted_and_give_zero() -> None:
    s, t, y = tensors()
    spec = LossSpec.from_config({"dkd": {"alpha": 0, "beta": 0}})
    assert spec(LossInputs(student_logits=s, teacher_logits=t, targets=y)).total.item() == 0.0


@pytest.mark.parametrize(("s", "t", "y", "message"), [
    (torch.randn(3, 1), torch.randn(3, 1), torch.zeros(3, dtype=torch.long), "at least 2 classes"),
    (torch.randn(3, 4), torch.randn(3, 5), torch.zeros(3, dtype=torch.long), r"\(3, 4\), \(3, 5\) and \(3,\)"),
    (torch.randn(3, 4), torch.randn(3, 4), torch.zeros(2, dtype=torch.long), "B labels"),
])
def test_shapes_it_cannot_decouple_are_one_line_das_errors(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, message: str) -> None:
    with pytest.raises(DasError, match=message) as err:
        dkd_loss(s, t, y, 1.0, 8.0, 4.0)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- through the config and train.py


def test_a_loss_config_with_dkd_weighs_it_beside_ce() -> None:
    spec = LossSpec.from_config({"ce": 1.0, "dkd": {"weight": 1.0, "alpha": 1, "beta": 8, "temperature": 4}})
    assert spec.needs == {"student_logits", "teacher_logits", "targets"}
    assert LossSpec.from_config(spec.to_config()) == spec
    s, t, y = tensors()
    out = spec(LossInputs(student_logits=s, teacher_logits=t, targets=y))
    hand = paper_dkd(STUDENT, TEACHER, LABELS, 1.0, 8.0, 4.0)
    assert out.terms["dkd"].item() == pytest.approx(hand, abs=1e-6)
    assert out.total.item() == pytest.approx(F.cross_entropy(s, y).item() + hand, abs=1e-6)
    half = LossSpec.from_config({"ce": 0.5, "dkd": {"weight": 0.5, "beta": 2}})(LossInputs(student_logits=s, teacher_logits=t, targets=y))
    assert half.terms["dkd"].item() == pytest.approx(paper_dkd(STUDENT, TEACHER, LABELS, 1.0, 2.0, 4.0), abs=1e-6)


def test_train_py_distils_with_dkd_from_the_command_line(tmp_path) -> None:
    out = tmp_path / "run"
    argv = [*TINY, "--baseline", "false", "--trainer.default_root_dir", str(out), "--trainer.log_every_n_steps", "1",
            "--model.losses", "{ce: 1.0, dkd: {weight: 1.0, beta: 2.0}}"]
    assert guarded(train.main, argv) == 0
    assert json.loads((out / "results.json").read_text())["distilled_test_acc"] >= 0
    rows = list(csv.DictReader((out / "logs" / "version_0" / "metrics.csv").open()))
    logged = [float(r["train/dkd"]) for r in rows if r.get("train/dkd")]
    assert len(logged) == 3 and all(v > 0 and np.isfinite(v) for v in logged)  # 3 batches, each term logged unweighted
    hparams = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["losses"] == {"ce": 1.0, "dkd": {"weight": 1.0, "beta": 2.0}}


def test_a_bad_dkd_option_on_the_command_line_is_one_line_and_trains_nothing(tmp_path, capsys) -> None:
    root = tmp_path / "run"
    argv = [*TINY, "--trainer.default_root_dir", str(root), "--model.losses", "{ce: 1, dkd: {alpha: -1}}"]
    assert guarded(train.main, argv) == USER_ERROR
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "loss 'dkd' option alpha=-1.0 must be >= 0" in errors[0]
    assert not (root / "checkpoints").exists()
