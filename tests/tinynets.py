"""Tiny networks with a declared feature contract, for fast tests of proxies and distillation."""

from __future__ import annotations

import torch
from torch import nn

from das.features import FeaturePoint


class TinyNet(nn.Module):
    """conv-bn-relu ×2 → pool → linear; width and depth vary so proxies have something to rank.

    With ``stages=True`` each conv-bn-relu is its own block (``body.i``) and is declared as a
    stage feature point, as a real backbone declares its stages.
    """

    def __init__(self, width: int = 8, num_classes: int = 10, depth: int = 2, in_channels: int = 3, stages: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(depth):
            block = [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            layers += [nn.Sequential(*block)] if stages else block
            c = width
        self.body = nn.Sequential(*layers)
        self.stages = depth if stages else 0
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.body(x)).flatten(1))

    def feature_points(self) -> list[FeaturePoint]:
        stages = [FeaturePoint(f"body.{i}", self.width, 1, "stage") for i in range(self.stages)]
        return [*stages, FeaturePoint("body", self.width, 1, "final"), FeaturePoint("fc", self.fc.out_features, 1, "logits")]


class ReluOnly(nn.Module):
    """One nn.ReLU straight on the input, then a Linear: activation patterns are the input's signs."""

    def __init__(self, units: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.fc = nn.Linear(units, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(x).flatten(1))


def batch(n: int = 8, classes: int = 10, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def wide_tiny_net(num_classes: int = 10) -> TinyNet:
    """A 16-channel TinyNet, for teachers wider than the default student."""
    return TinyNet(width=16, num_classes=num_classes)


class SlowTinyNet(TinyNet):
    """A TinyNet whose training forward takes at least ``delay`` seconds, so a test can kill a process between its steps."""

    def __init__(self, num_classes: int = 10, delay: float = 0.02) -> None:
        super().__init__(num_classes=num_classes)
        self.delay = delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            import time

            time.sleep(self.delay)
        return super().forward(x)
