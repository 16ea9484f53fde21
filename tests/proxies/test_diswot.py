"""DisWOT's defining properties (Dong et al., CVPR 2023)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from das.errors import DasError
from das.proxies import DisWOTReference, score
from das.proxies.diswot import classifier_weight_grad, relation_matrix, semantic_matrix
from tests.tinynets import TinyNet, batch

NAMES = ["diswot", "diswot_relation", "diswot_semantic"]


def trained_teacher() -> TinyNet:
    """A teacher whose BN statistics and weights are not at their initial values."""
    teacher = TinyNet(width=12)
    x, y = batch(32, seed=3)
    opt = torch.optim.SGD(teacher.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(teacher(x), y).backward()
        opt.step()
    return teacher.eval()


def test_terms_are_non_positive_and_sum_to_the_score() -> None:
    teacher = trained_teacher()
    for width in (4, 8, 16):
        s = score(TinyNet(width=width), [batch(16)], NAMES, teacher=teacher)
        assert s["diswot_relation"] <= 0 and s["diswot_semantic"] <= 0
        assert s["diswot"] == pytest.approx(s["diswot_relation"] + s["diswot_semantic"])


def test_identical_network_scores_zero() -> None:
    """A student computing exactly the teacher's function has distance 0, the maximum score."""
    teacher = TinyNet(width=8)  # untrained: train-mode and eval-mode reads differ, so use one mode
    x, y = batch(16)
    # Without running statistics BN normalises by the batch in both modes, so the teacher
    # (read in eval mode) and its copy (scored in train mode) compute the same function.
    for m in teacher.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.track_running_stats = False
            m.running_mean = m.running_var = None
    ref = DisWOTReference.from_teacher(teacher, (x, y))
    scores = score(copy.deepcopy(teacher), [(x, y)], NAMES, teacher=ref)
    assert scores["diswot"] == pytest.approx(0.0, abs=1e-12)
    worse = score(TinyNet(width=8), [(x, y)], NAMES, teacher=ref)
    assert worse["diswot"] < scores["diswot"]


def test_invariant_to_batch_order() -> None:
    teacher = trained_teacher()
    student = TinyNet(width=6)
    x, y = batch(16)
    perm = torch.randperm(16)
    a = score(student, [(x, y)], NAMES, teacher=teacher)
    b = score(student, [(x[perm], y[perm])], NAMES, teacher=teacher)
    for name in NAMES:
        assert a[name] == pytest.approx(b[name], rel=1e-6, abs=1e-12)


def test_channel_counts_may_differ_and_scores_are_finite() -> None:
    teacher = trained_teacher()  # 12 channels
    for width in (3, 7, 40):
        s = score(TinyNet(width=width), [batch(8)], NAMES, teacher=teacher)
        assert all(torch.isfinite(torch.tensor(v)) for v in s.values())


def test_closed_form_classifier_grad_matches_autograd() -> None:
    net = TinyNet(width=5)
    x, y = batch(8)
    h = net.pool(net.body(x)).flatten(1).detach()
    logits = net.fc(h)
    F.cross_entropy(logits, y).backward()
    closed = classifier_weight_grad(h, logits.detach(), y)
    assert torch.allclose(closed.float(), net.fc.weight.grad, atol=1e-6)


def test_matrices_are_row_normalised_and_permute_with_the_batch() -> None:
    f = torch.randn(6, 4, 3, 3)
    g = relation_matrix(f)
    assert g.shape == (6, 6)
    assert torch.allclose(g.norm(dim=1), torch.ones(6, dtype=g.dtype))
    perm = torch.tensor([5, 3, 1, 0, 2, 4])
    assert torch.allclose(relation_matrix(f[perm]), g[perm][:, perm])
    assert semantic_matrix(torch.randn(10, 7)).shape == (10, 10)


def test_needs_a_teacher() -> None:
    with pytest.raises(DasError, match="teacher"):
        score(TinyNet(), [batch()], ["diswot"])


def test_unknown_proxy_lists_close_matches() -> None:
    with pytest.raises(DasError, match="diswot"):
        score(TinyNet(), [batch()], ["diswt"], teacher=TinyNet())


def test_model_is_left_unchanged() -> None:
    student = TinyNet(width=6).eval()
    student.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    score(student, [batch(16)], NAMES, teacher=trained_teacher())
    assert not student.training
    assert not student.fc.weight.requires_grad
    for key, value in student.state_dict().items():
        assert torch.equal(value, before[key]), key


class DeadNet(TinyNet):
    """A network whose features ignore the input (like an NB201 cell cut off by 'none' edges)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x * 0)


def test_a_network_that_ignores_its_input_ranks_below_real_ones() -> None:
    teacher = trained_teacher()
    dead = DeadNet(width=8)
    for m in dead.modules():  # BN of an all-zero map outputs its bias; zero it so features are 0
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.zeros_(m.bias)
    dead_score = score(dead, [batch(16)], NAMES, teacher=teacher)
    # the maximum per-row distance between unit rows is 4: dead rows cost exactly that
    assert dead_score["diswot_relation"] == pytest.approx(-4 / 16)
    assert dead_score["diswot_semantic"] == pytest.approx(-4 / 10)
    for width in (4, 8, 16):
        assert score(TinyNet(width=width), [batch(16)], NAMES, teacher=teacher)["diswot"] > dead_score["diswot"]
