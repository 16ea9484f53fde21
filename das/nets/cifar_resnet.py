"""CIFAR ResNets of He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016, §4.2).

These are the standard small teachers of CIFAR distillation papers: a 3×3 stem with 16 channels,
three stages of ``n`` BasicBlocks with 16/32/64 channels (stride 1/2/2), global average pooling
and one linear layer, 6n+2 layers in all (ResNet-20/32/44/56/110 for n = 3/5/7/9/18). Shortcuts
that change shape use the paper's option A: parameter-free, stride-2 subsampling plus
zero-padding of the new channels, so the models have exactly the paper's parameter counts.

Parameter names follow the widely used public re-implementation (``conv1``, ``bn1``,
``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``, ``linear``) so that its published CIFAR-10
checkpoints load strictly (after ``load_checkpoint`` strips their ``module.`` prefix).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from das.features import FeaturePoint

__all__ = ["BasicBlock", "CifarResNet", "PadShortcut"]


class PadShortcut(nn.Module):
    """Option-A shortcut: keep every second pixel, zero-pad the new channels on both sides.

    The split of the padding (half before, half after the existing channels) must match the
    public checkpoints: the next block's weights were trained against this channel layout.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity (or option-A) shortcut; ReLU after the sum."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        reshape = stride != 1 or in_channels != channels
        self.shortcut: nn.Module = PadShortcut(in_channels, channels, stride) if reshape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs (any size works: the pooling is global).

    Args:
        blocks: ``n``, BasicBlocks per stage, or one count per stage.
        num_classes: outputs of the final linear layer.
        widths: channels of the three stages (the paper's 16/32/64 by default).
        block: makes one block from ``(in_channels, channels, stride)``; the search space
            :mod:`das.spaces.resnet_cifar` passes one whose shortcut can also narrow.
    """

    def __init__(
        self,
        blocks: int | Sequence[int],
        num_classes: int = 10,
        widths: tuple[int, int, int] = (16, 32, 64),
        block: Callable[[int, int, int], nn.Module] = BasicBlock,
    ) -> None:
        super().__init__()
        self.widths = widths
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        channels = widths[0]
        stages = []
        per_stage = (blocks,) * len(widths) if isinstance(blocks, int) else tuple(blocks)
        for n, width, stride in zip(per_stage, widths, (1, 2, 2), strict=True):
            layers = []
            for i in range(n):
                layers.append(block(channels, width, stride if i == 0 else 1))
                channels = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(widths[2], num_classes)
        # He et al. (2015) "Delving deep into rectifiers" init, as in the paper and the public
        # checkpoints' training code; BatchNorm keeps its default (weight 1, bias 0).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        # Adaptive (not fixed 8×8) pooling, so inputs smaller or larger than 32×32 work too.
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))

    def feature_points(self) -> list[FeaturePoint]:
        """Stage outputs (each ends with a ReLU); ``layer3`` is the map that gets pooled."""
        c1, c2, c3 = self.widths
        return [
            FeaturePoint("layer1", c1, 1, "stage"),
            FeaturePoint("layer2", c2, 2, "stage"),
            FeaturePoint("layer3", c3, 4, "final"),
            FeaturePoint("linear", self.linear.out_features, 1, "logits"),
        ]
