"""Stage points of torchvision models come from torchvision's graph node names.

Each stage is the map at which a network hands over to the next resolution (the last block at
each stride), named by a module that a forward hook can tap. Models are built with random
weights (``weights=None``); their points are traced on the meta device.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from das.distill.pairing import pair_stages
from das.features import FeatureTap, feature_points, final_point, map_points
from teachers import create_teacher
from teachers.torchvision_models import torchvision_points

X64 = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))

EXPECTED_STAGES = {
    "resnet18": ["relu", "layer1", "layer2", "layer3"],
    "mobilenet_v3_small": ["features.0", "features.1", "features.3", "features.8"],
    "efficientnet_b0": ["features.1", "features.2", "features.3", "features.5"],
    "densenet121": ["features.relu0", "features.denseblock1", "features.denseblock2", "features.denseblock3"],
    "vgg11": ["features.1", "features.4", "features.9", "features.14", "features.19"],
}
SLOW = ("densenet121", "vgg11")  # a few seconds to build (vgg11 has 133M parameters)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in EXPECTED_STAGES]
)
def test_stages_are_the_last_block_at_each_resolution(name: str) -> None:
    model = create_teacher(f"torchvision:{name}", num_classes=10)
    assert all(m.training for m in model.modules())  # tracing leaves the model as built
    points = feature_points(model)
    stages = [p for p in points if p.role == "stage"]
    assert [p.module for p in stages] == EXPECTED_STAGES[name]
    reductions = [p.reduction for p in map_points(points)]
    assert reductions == sorted(set(reductions)), points  # strictly increasing, final last
    with FeatureTap(model.eval(), [p.module for p in points]) as tap, torch.no_grad():
        model(X64)
    for p in map_points(points):
        out = tap.outputs[p.module]
        assert out.shape[:2] == (2, p.channels), p
        if p.role == "stage":
            assert out.shape[-1] == X64.shape[-1] // p.reduction, p


class DataDependent(nn.Module):
    """A CNN whose forward branches on its data, which torch.fx cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if x.sum() > 0:
            x = x * 1.0
        return self.fc(self.pool(self.body(x)).flatten(1))


def test_untraceable_model_keeps_its_final_map_and_logits_only() -> None:
    points = torchvision_points(DataDependent(), "a data-dependent model", (3, 32, 32))
    assert [(p.module, p.role) for p in points] == [("body", "final"), ("fc", "logits")]


def test_resnet18_student_pairs_with_resnet34_teacher_at_equal_reductions() -> None:
    student = create_teacher("torchvision:resnet18", num_classes=10)
    teacher = create_teacher("torchvision:resnet34", num_classes=10)
    pairs = pair_stages(feature_points(student), feature_points(teacher))
    assert [(p.student.module, p.teacher.module) for p in pairs] == [
        ("relu", "relu"), ("layer1", "layer1"), ("layer2", "layer2"), ("layer3", "layer3"), ("layer4", "layer4")
    ]
    assert all(p.student.reduction == p.teacher.reduction for p in pairs)
    assert final_point(feature_points(teacher)).module == pairs[-1].teacher.module
    with FeatureTap(student.eval(), [p.student.module for p in pairs]) as s_tap, torch.no_grad():
        student(X64)
    with FeatureTap(teacher.eval(), [p.teacher.module for p in pairs]) as t_tap, torch.no_grad():
        teacher(X64)
    for p in pairs:
        s, t = s_tap.outputs[p.student.module], t_tap.outputs[p.teacher.module]
        assert s.shape == t.shape == (2, p.teacher.channels, 64 // p.teacher.reduction, 64 // p.teacher.reduction)
