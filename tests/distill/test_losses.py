"""Distillation losses match their definitions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from das.distill.losses import (
    LOSSES,
    LossInputs,
    LossSpec,
    LossTerm,
    cosine_feature_loss,
    kd_loss,
    match_spatial,
    projector,
    register_loss,
)
from das.errors import DasError
from das.proxies.diswot import relation_distance
from das.relations import relation_matrix


def test_kd_is_zero_for_equal_logits_and_matches_the_formula() -> None:
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    assert kd_loss(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    T = 3.0
    p_t = F.softmax(t / T, dim=1)
    manual = (p_t * (p_t.log() - F.log_softmax(s / T, dim=1))).sum(1).mean() * T * T
    assert kd_loss(s, t, T).item() == pytest.approx(manual.item(), rel=1e-5)


def test_cosine_loss_is_scale_times_one_minus_cos() -> None:
    a = torch.randn(2, 5, 3, 3)
    assert cosine_feature_loss(a, a, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_feature_loss(a, -a, 2.0).item() == pytest.approx(4.0, rel=1e-5)
    assert cosine_feature_loss(a, 3 * a, 1.0).item() == pytest.approx(0.0, abs=1e-6)  # scale-free
    b = torch.randn(2, 5, 3, 3)
    cos = F.cosine_similarity(a, b, dim=1).mean().item()
    assert cosine_feature_loss(a, b, 0.5).item() == pytest.approx(0.5 * (1 - cos), rel=1e-5)


def test_spatial_sizes_are_matched_by_pooling_the_larger_map() -> None:
    big, small = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4)
    a, b = match_spatial(big, small)
    assert a.shape == b.shape == (2, 4, 4, 4)
    assert math.isfinite(cosine_feature_loss(big, small, 1.0).item())


def test_projector_only_where_channels_differ() -> None:
    assert isinstance(projector(8, 8), torch.nn.Identity)
    conv = projector(8, 16)
    assert conv(torch.randn(1, 8, 2, 2)).shape == (1, 16, 2, 2)


# ----------------------------------------------------------------------------- the loss registry


def test_every_default_loss_is_registered() -> None:
    assert set(LOSSES.names()) >= {"ce", "kd", "dkd", "cosine", "relation", "fitnet"}


def test_registered_kd_is_zero_for_equal_logits_and_kl_times_t_squared_by_hand() -> None:
    kd = LOSSES.get("kd")
    t = torch.tensor([[1.5, -0.5]])
    assert kd(t, t, temperature=2.0).item() == pytest.approx(0.0, abs=1e-7)
    # At T=2 the teacher [2 ln 3, 0] softens to p_t = (3/4, 1/4); the student [0, 0] to (1/2, 1/2).
    teacher = torch.tensor([[2 * math.log(3.0), 0.0]])
    student = torch.zeros(1, 2)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd(student, teacher, temperature=2.0).item() == pytest.approx(kl * 4.0, rel=1e-6)


def test_registered_ce_with_label_smoothing_matches_the_hand_value() -> None:
    ce = LOSSES.get("ce")
    logits, y = torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([0])  # p = (3/4, 1/4)
    eps = 0.2
    # target (1 − ε)·onehot + ε/K: 0.9 on class 0, 0.1 on class 1.
    hand = -(0.9 * math.log(0.75) + 0.1 * math.log(0.25))
    assert ce(logits, y, label_smoothing=eps).item() == pytest.approx(hand, rel=1e-6)
    assert ce(logits, y).item() == pytest.approx(-math.log(0.75), rel=1e-6)


def test_registered_cosine_is_zero_when_parallel_and_doubles_with_scale() -> None:
    cosine = LOSSES.get("cosine")
    s = torch.tensor([[1.0, 0.0]]).reshape(1, 2, 1, 1)
    t = torch.tensor([[1.0, 1.0]]).reshape(1, 2, 1, 1)
    assert cosine(s, 5 * s, scale=3.0).item() == pytest.approx(0.0, abs=1e-7)
    one = cosine(s, t, scale=1.0).item()
    assert one == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-6)
    assert cosine(s, t, scale=2.0).item() == pytest.approx(2 * one, rel=1e-6)


def test_registered_relation_is_zero_for_equal_grams_and_matches_the_hand_value() -> None:
    relation = LOSSES.get("relation")
    f = torch.randn(4, 3, 2, 2)
    assert relation(f, 2.5 * f).item() == pytest.approx(0.0, abs=1e-6)  # G scales by 6.25: rows normalise it away
    # Student rows (1,0),(0,1): G_s = I. Teacher rows (1,0),(1,0): G_t rows (1,1)/√2.
    # Each row differs by (1/√2 − 1)² + 1/2 = 2 − √2; two rows over B² = 4.
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 2, 1, 1)
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).reshape(2, 2, 1, 1)
    assert relation(student, teacher).item() == pytest.approx((2 - math.sqrt(2)) / 2, rel=1e-6)


def test_relation_loss_equals_the_diswot_proxy_distance_across_widths() -> None:
    relation = LOSSES.get("relation")
    s, t = torch.randn(6, 4, 3, 3), torch.randn(6, 8, 2, 2)  # widths and sizes differ: Grams are B×B
    proxy = relation_distance(relation_matrix(t), relation_matrix(s))
    assert relation(s, t).item() == pytest.approx(proxy, rel=1e-5)
    dead = torch.zeros(6, 4, 3, 3)  # the proxy's dead-row rule holds in the loss too
    assert relation(dead, t).item() == pytest.approx(relation_distance(relation_matrix(t), relation_matrix(dead)), rel=1e-6)


def test_registered_fitnet_is_zero_for_equal_features_and_a_hand_mse() -> None:
    fitnet = LOSSES.get("fitnet")
    f = torch.randn(2, 3, 2, 2)
    assert fitnet(f, f).item() == 0.0
    s = torch.tensor([1.0, 2.0, 0.0, -1.0]).reshape(1, 2, 2, 1)
    t = torch.zeros(1, 2, 2, 1)
    assert fitnet(s, t).item() == pytest.approx((1 + 4 + 0 + 1) / 4)


def test_feature_losses_refuse_unprojected_widths_in_one_line() -> None:
    with pytest.raises(DasError, match="projector") as err:
        LOSSES.get("fitnet")(torch.randn(2, 3, 2, 2), torch.randn(2, 5, 2, 2))
    assert "\n" not in str(err.value)


def _inputs(requires_grad: bool = True) -> LossInputs:
    g = torch.Generator().manual_seed(0)
    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).requires_grad_(requires_grad)
    return LossInputs(
        student_logits=leaf(4, 3), teacher_logits=leaf(4, 3), targets=torch.tensor([0, 1, 2, 1]),
        student_features=leaf(4, 2, 3, 3), teacher_features=leaf(4, 5, 3, 3), student_projected=leaf(4, 5, 3, 3),
    )


ALL_TERMS = {"ce": 0.5, "kd": {"weight": 2.0, "temperature": 3.0}, "cosine": {"weight": 0.25, "scale": 4.0}, "relation": 1.5, "fitnet": 0.75}


def test_spec_total_is_the_hand_weighted_sum_of_the_terms() -> None:
    x = _inputs(requires_grad=False)
    out = LossSpec.from_config(ALL_TERMS)(x)
    hand = {
        "ce": F.cross_entropy(x.student_logits, x.targets),
        "kd": kd_loss(x.student_logits, x.teacher_logits, 3.0),
        "cosine": cosine_feature_loss(x.student_projected, x.teacher_features, 4.0),
        "relation": torch.tensor(relation_distance(relation_matrix(x.teacher_features), relation_matrix(x.student_features))),
        "fitnet": F.mse_loss(x.student_projected, x.teacher_features),
    }
    assert set(out.terms) == set(hand)
    for name, value in hand.items():
        assert out.terms[name].item() == pytest.approx(value.item(), rel=1e-5), name
    weighted = 0.5 * hand["ce"] + 2.0 * hand["kd"] + 0.25 * hand["cosine"] + 1.5 * hand["relation"] + 0.75 * hand["fitnet"]
    assert out.total.item() == pytest.approx(weighted.item(), rel=1e-5)


def test_gradients_reach_the_student_and_never_the_teacher() -> None:
    x = _inputs()
    LossSpec.from_config(ALL_TERMS)(x).total.backward()
    for name in ("student_logits", "student_features", "student_projected"):
        grad = getattr(x, name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert x.teacher_logits.grad is None and x.teacher_features.grad is None


def test_zero_weight_terms_are_neither_computed_nor_reported() -> None:
    x = LossInputs(student_logits=torch.randn(2, 3), targets=torch.tensor([0, 1]))  # no teacher at all
    out = LossSpec.from_config({"ce": 1.0, "kd": 0.0})(x)
    assert set(out.terms) == {"ce"}
    assert out.total.item() == pytest.approx(out.terms["ce"].item())
    assert LossSpec.from_config({"ce": 1.0, "kd": 0.0}).needs == {"student_logits", "targets"}


def test_config_round_trips_and_terms_hash() -> None:
    spec = LossSpec.from_config(ALL_TERMS)
    assert LossSpec.from_config(spec.to_config()) == spec
    assert hash(spec) == hash(LossSpec.from_config(ALL_TERMS))
    assert LossSpec.from_config({"cosine": {"scale": 2}}).terms == (LossTerm("cosine", 1.0, (("scale", 2.0),)),)


def test_config_parses_from_yaml_with_jsonargparse() -> None:
    from jsonargparse import ArgumentParser

    from das.distill.losses import LossConfig

    parser = ArgumentParser()
    parser.add_argument("--losses", type=LossConfig)
    cfg = parser.parse_string("losses:\n  ce: 1\n  kd: {weight: 0.5, temperature: 4}\n")
    assert LossSpec.from_config(cfg.losses).to_config() == {"ce": 1.0, "kd": {"weight": 0.5, "temperature": 4.0}}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"kld": 1.0}, "unknown distillation loss 'kld': did you mean 'kd'"),
        ({"ce": -1.0}, "weight=-1.0 must be a finite number >= 0"),
        ({"kd": {"weight": -0.5}}, "weight=-0.5 must be"),
        ({"ce": float("nan")}, "weight=nan must be"),
        ({"kd": {"temperature": 0.0}}, "temperature=0.0 must be > 0"),
        ({"kd": {"temprature": 2.0}}, "no option 'temprature': did you mean 'temperature'"),
        ({"ce": {"label_smoothing": 1.0}}, r"label_smoothing=1.0 must be in \[0, 1\)"),
        ({"cosine": {"scale": -1.0}}, "scale=-1.0 must be >= 0"),
        ({"relation": {"scale": 1.0}}, "it takes no options"),
        ({"fitnet": "big"}, "weight='big' must be"),
        ({}, "no terms"),
    ],
)
def test_bad_configs_raise_one_line_das_errors(config: dict, message: str) -> None:
    with pytest.raises(DasError, match=message) as err:
        LossSpec.from_config(config)
    assert "\n" not in str(err.value)


def test_a_missing_input_is_named_and_duplicates_refused() -> None:
    with pytest.raises(DasError, match="needs teacher_logits"):
        LossSpec.from_config({"kd": 1.0})(LossInputs(student_logits=torch.randn(2, 3)))
    with pytest.raises(DasError, match="more than once"):
        LossSpec((LossTerm("ce"), LossTerm("ce", 2.0)))


def test_registering_a_duplicate_loss_name_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_loss("kd")(lambda student_logits: student_logits.sum())
