"""Distillation losses match their definitions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from das.distill.losses import cosine_feature_loss, kd_loss, match_spatial, projector


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
