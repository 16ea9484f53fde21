"""The feature contract: declared points, inferred points, validated names, hooks."""

from __future__ import annotations

import pytest
import torch
import torchvision

from das.errors import DasError
from das.features import FeatureTap, feature_points, final_point, infer_feature_points, logits_point
from tests.tinynets import TinyNet


def test_inferred_final_map_is_the_pooled_map_not_the_pool_output() -> None:
    model = torchvision.models.resnet18(num_classes=5)
    points = infer_feature_points(model, torch.randn(2, 3, 64, 64))
    assert final_point(points).module == "layer4" and final_point(points).channels == 512
    assert logits_point(points).module == "fc"


def test_declared_points_are_used_and_validated() -> None:
    model = TinyNet(width=6)
    assert final_point(feature_points(model)).module == "body"
    model.feature_points = lambda: [*TinyNet(width=6).feature_points()[:1]]  # no logits point
    with pytest.raises(DasError, match="logits"):
        feature_points(model)


def test_unknown_module_names_are_refused_with_a_hint() -> None:
    with pytest.raises(DasError, match="did you mean 'body'"):
        FeatureTap(TinyNet(), ["bdy"])


def test_tap_records_outputs_and_removes_its_hooks() -> None:
    model = TinyNet(width=6)
    with FeatureTap(model, ["body", "fc"]) as tap:
        model(torch.randn(2, 3, 8, 8))
    assert tap.outputs["body"].shape == (2, 6, 8, 8) and tap.outputs["fc"].shape == (2, 10)
    assert all(not m._forward_hooks for m in model.modules())


def test_a_model_without_points_needs_an_example() -> None:
    with pytest.raises(DasError, match="example"):
        feature_points(torchvision.models.resnet18(num_classes=5))
