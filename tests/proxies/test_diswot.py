"""DisWOT as its authors define it (Dong et al., CVPR 2023; their ``channel_similarity``)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from das.errors import DasError
from das.proxies import DisWOTReference, score
from das.proxies.diswot import classifier_weight_grad, match_width, semantic_distance
from das.relations import relation_matrix
from tests.tinynets import TinyNet, batch

NAMES = ["diswot", "diswot_relation", "diswot_semantic"]


def trained_teacher(width: int = 12) -> TinyNet:
    """A teacher whose BN statistics and weights are not at their initial values."""
    torch.manual_seed(1)
    teacher = TinyNet(width=width)
    x, y = batch(32, seed=3)
    opt = torch.optim.SGD(teacher.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(teacher(x), y).backward()
        opt.step()
    return teacher.eval()


# --------------------------------------------------------------- the semantic term, by hand


def test_semantic_distance_equals_the_authors_formula_worked_by_hand() -> None:
    """Two classes, three channels, worked on paper from channel_similarity's definition.

    Row i of class k's normalised outer product w wᵀ is sign(w_i)·w/‖w‖ (zero where w_i = 0).
    Class 0: teacher (1,2,2)/3 in every row; student (2,−1,2)/3 with row 1 negated:
    squared row differences 10/9 + 26/9 + 10/9 = 46/9.
    Class 1: teacher rows 0, (0,3,4)/5, (0,3,4)/5; student (3,4,12)/13 in every row:
    1 + 2/13 + 2/13 = 17/13. Total 46/9 + 17/13 = 751/117, divided by C·K = 6.
    """
    teacher = torch.tensor([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]])
    student = torch.tensor([[2.0, -1.0, 2.0], [3.0, 4.0, 12.0]])
    assert semantic_distance(teacher, student) == pytest.approx(751 / 702, rel=1e-12)


def authors_channel_distance(teacher_grad: torch.Tensor, student_grad: torch.Tensor) -> float:
    """The authors' channel_similarity, written out: batch = classes, one spatial position."""
    classes, channels = teacher_grad.shape
    t = teacher_grad.double().reshape(classes, channels, 1)
    s = student_grad.double().reshape(classes, channels, 1)
    emb_t = F.normalize(torch.bmm(t, t.transpose(1, 2)), dim=2)
    emb_s = F.normalize(torch.bmm(s, s.transpose(1, 2)), dim=2)
    return float(((emb_s - emb_t) ** 2).sum() / (channels * classes))


def test_semantic_distance_matches_the_authors_batched_form_on_random_gradients() -> None:
    g = torch.Generator().manual_seed(0)
    for classes, channels in ((10, 16), (3, 64), (100, 8)):
        t, s = torch.randn(classes, channels, generator=g), torch.randn(classes, channels, generator=g)
        assert semantic_distance(t, s) == pytest.approx(authors_channel_distance(t, s), rel=1e-12)


def test_score_reads_the_same_classifier_gradients_autograd_gives() -> None:
    """End to end: the proxy's semantic term is the authors' formula on the two fc.weight.grad."""
    x, y = batch(16)
    teacher, student = trained_teacher(width=6), TinyNet(width=6)
    ref = DisWOTReference.from_teacher(teacher, (x, y), init="trained")
    got = score(student, [(x, y)], ["diswot_semantic"], teacher=ref)["diswot_semantic"]

    grads = []
    for net, train in ((copy.deepcopy(teacher), False), (copy.deepcopy(student), True)):
        net.train(train)
        F.cross_entropy(net(x), y).backward()
        grads.append(net.fc.weight.grad)
    assert got == pytest.approx(-authors_channel_distance(*grads), rel=1e-5)


# --------------------------------------------------------------- different widths


def test_a_wider_gradient_is_averaged_over_adjacent_channels() -> None:
    wide = torch.tensor([[1.0, 3.0, 2.0, 2.0, 5.0, 7.0]])
    assert torch.equal(match_width(wide, 3), torch.tensor([[2.0, 2.0, 6.0]]))
    assert torch.equal(match_width(wide, 6), wide)
    with pytest.raises(ValueError):
        match_width(wide, 12)


def test_widths_that_differ_compare_the_pooled_gradient_by_hand() -> None:
    """Teacher (1,3,2,2) pools to (2,2): rows (1,1)/√2. Student (1,−1): rows ±(1,−1)/√2.
    Each row differs by a vector of squared length 2: 4 in all, over C·K = 2 → 2."""
    teacher = torch.tensor([[1.0, 3.0, 2.0, 2.0]])
    assert semantic_distance(teacher, torch.tensor([[1.0, -1.0]])) == pytest.approx(2.0)
    assert semantic_distance(teacher, torch.tensor([[5.0, 5.0]])) == pytest.approx(0.0, abs=1e-15)
    # a wider student is pooled the same way: the rule is symmetric
    assert semantic_distance(torch.tensor([[1.0, -1.0]]), teacher) == pytest.approx(2.0)


def test_channel_counts_may_differ_and_scores_are_finite() -> None:
    teacher = trained_teacher()  # 12 channels
    for width in (3, 7, 12, 40):
        s = score(TinyNet(width=width), [batch(8)], NAMES, teacher=teacher)
        assert all(torch.isfinite(torch.tensor(v)) for v in s.values())


def test_class_counts_must_match() -> None:
    with pytest.raises(DasError, match="classes"):
        semantic_distance(torch.ones(10, 4), torch.ones(5, 4))


# --------------------------------------------------------------- the teacher's weights


def test_random_teacher_depends_on_the_architecture_not_the_trained_weights() -> None:
    x, y = batch(16)
    trained, other = trained_teacher(), TinyNet(width=12)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    a = DisWOTReference.from_teacher(trained, (x, y), init="random", seed=5)
    b = DisWOTReference.from_teacher(other, (x, y), init="random", seed=5)
    assert torch.equal(a.relation, b.relation) and torch.equal(a.weight_grad, b.weight_grad)
    assert all(torch.equal(v, before[k]) for k, v in trained.state_dict().items())  # the teacher is untouched
    assert not trained.training
    c = DisWOTReference.from_teacher(trained, (x, y), init="random", seed=6)
    assert not torch.equal(a.weight_grad, c.weight_grad)
    t = DisWOTReference.from_teacher(trained, (x, y), init="trained")
    assert not torch.allclose(a.relation, t.relation)


def test_random_init_is_the_authors_gaussian() -> None:
    x, y = batch(64)
    from das.proxies.diswot import gaussian_init_

    net = gaussian_init_(TinyNet(width=32), torch.Generator().manual_seed(0))
    w = torch.cat([m.weight.detach().flatten() for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))])
    assert abs(float(w.mean())) < 0.05 and abs(float(w.std()) - 1.0) < 0.05
    assert all(float(m.bias.abs().sum()) == 0 for m in net.modules() if isinstance(m, torch.nn.Linear))
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in bns)


def test_score_compares_with_a_random_teacher_unless_told_trained() -> None:
    x, y = batch(16)
    teacher, student = trained_teacher(), TinyNet(width=6)
    default = score(student, [(x, y)], NAMES, teacher=teacher)
    random = score(student, [(x, y)], NAMES, teacher=DisWOTReference.from_teacher(teacher, (x, y), init="random", seed=0))
    trained = score(student, [(x, y)], NAMES, teacher=teacher, teacher_init="trained")
    assert default == random
    assert default != trained


def test_unknown_teacher_init_is_one_clear_line() -> None:
    with pytest.raises(DasError, match=r"'pretrained' is not one of random, trained"):
        score(TinyNet(), [batch()], ["diswot"], teacher=TinyNet(), teacher_init="pretrained")


# --------------------------------------------------------------- properties of the score


def test_terms_are_non_positive_and_sum_to_the_score() -> None:
    teacher = trained_teacher()
    for width in (4, 8, 16):
        s = score(TinyNet(width=width), [batch(16)], NAMES, teacher=teacher)
        assert s["diswot_relation"] <= 0 and s["diswot_semantic"] <= 0
        assert s["diswot"] == pytest.approx(s["diswot_relation"] + s["diswot_semantic"])


def test_identical_network_scores_zero() -> None:
    """A student computing exactly the teacher's function has distance 0, the maximum score."""
    teacher = TinyNet(width=8)
    x, y = batch(16)
    # Without running statistics BN normalises by the batch in both modes, so the teacher
    # (read in eval mode) and its copy (scored in train mode) compute the same function.
    for m in teacher.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.track_running_stats = False
            m.running_mean = m.running_var = None
    ref = DisWOTReference.from_teacher(teacher, (x, y), init="trained")
    scores = score(copy.deepcopy(teacher), [(x, y)], NAMES, teacher=ref)
    assert scores["diswot"] == pytest.approx(0.0, abs=1e-12)
    worse = score(TinyNet(width=8), [(x, y)], NAMES, teacher=ref)
    assert worse["diswot"] < scores["diswot"]


def test_invariant_to_batch_order() -> None:
    teacher = trained_teacher()
    student = TinyNet(width=6)
    x, y = batch(16)
    perm = torch.randperm(16)
    for init in ("random", "trained"):
        a = score(student, [(x, y)], NAMES, teacher=teacher, teacher_init=init)
        b = score(student, [(x[perm], y[perm])], NAMES, teacher=teacher, teacher_init=init)
        for name in NAMES:
            assert a[name] == pytest.approx(b[name], rel=1e-6, abs=1e-12)


def test_closed_form_classifier_grad_matches_autograd() -> None:
    net = TinyNet(width=5)
    x, y = batch(8)
    h = net.pool(net.body(x)).flatten(1).detach()
    logits = net.fc(h)
    F.cross_entropy(logits, y).backward()
    closed = classifier_weight_grad(h, logits.detach(), y)
    assert torch.allclose(closed.float(), net.fc.weight.grad, atol=1e-6)


def test_relation_matrix_is_row_normalised_and_permutes_with_the_batch() -> None:
    f = torch.randn(6, 4, 3, 3)
    g = relation_matrix(f)
    assert g.shape == (6, 6)
    assert torch.allclose(g.norm(dim=1), torch.ones(6, dtype=g.dtype))
    perm = torch.tensor([5, 3, 1, 0, 2, 4])
    assert torch.allclose(relation_matrix(f[perm]), g[perm][:, perm])


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
    for init in ("random", "trained"):
        dead_score = score(dead, [batch(16)], NAMES, teacher=teacher, teacher_init=init)
        # every row of a dead network has no direction and costs 4, the largest distance two unit rows can have
        assert dead_score["diswot_relation"] == pytest.approx(-4 / 16)
        assert dead_score["diswot_semantic"] == pytest.approx(-4.0)
        for width in (4, 8, 16):
            live = score(TinyNet(width=width), [batch(16)], NAMES, teacher=teacher, teacher_init=init)
            assert live["diswot"] > dead_score["diswot"]
