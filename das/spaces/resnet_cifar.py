"""The CIFAR ResNet space: blocks and width per stage of a ResNet-20-style network.

DisWOT (Dong, Li & Wei, "DisWOT: Student Architecture Search for Distillation WithOut
Training", CVPR 2023) searches ResNet students for CIFAR ResNet teachers by the number of
BasicBlocks in each of the three stages, from {1, 3, 5, 7}; its code
(``models/candidates/mutable/mutable_depth_resnet20.py``) keeps the widths at 16/32/64. das adds
a width multiplier per stage, so a search can also trade width for depth under a parameter
budget; ``multipliers=[1.0]`` gives the depth-only space (64 members).

The network is the CIFAR ResNet of He et al. ("Deep Residual Learning for Image Recognition",
CVPR 2016, §4.2) exactly as the built-in teachers build it (:class:`teachers.cifar_resnet.CifarResNet`,
same module names, same Kaiming init):

    3×3 conv + BN + ReLU at w1 -> stage 1: b1 blocks at w1 -> stage 2: b2 blocks at w2, stride 2
    -> stage 3: b3 blocks at w3, stride 2 -> global average pool -> Linear

with ``w_s = round_half_up(C · 2^(s-1) · m_s)`` (C=16; at least 1 channel) and the stem at w1, so
blocks (3, 3, 3) at width (1, 1, 1) *is* ResNet-20: same parameters (269,722 for 10 classes),
same state_dict keys, and the public ResNet-20 checkpoint loads into it strictly. With the
default multipliers every width is a whole number (multiples of 4 at C=16), so the rounding
only matters for other C or multipliers.

Shortcuts: identity where the shape is kept; He et al.'s option A (parameter-free: stride-2
subsampling, zero-padding of the new channels) where the first block of a stage widens or
subsamples, as in the teachers. Option A cannot narrow, and with independent per-stage
multipliers a stage can be narrower than the one before it (stage 1 at 1.5 = 24 channels, stage
2 at 0.5 = 16): there, and only there, the shortcut is a 1×1 convolution + BN (option B). That
keeps the space a full grid (every stage's choices independent, which is what Optuna's samplers
assume; no member invalid or merged into another), at the cost of a few parameters in the
narrowing members (1,280 of the 8,000).

Feature points are the teachers' own: ``layer1`` and ``layer2`` (stage), ``layer3`` (final: the
last stage's output is the map the classifier pools, so it is not declared twice) and ``linear``
(logits), so DisWOT, the AZ-NAS blocks and stage-wise distillation read this space as they read
the teachers.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import optuna
from torch import nn

from das.errors import DasError
from das.nets.cifar_resnet import BasicBlock, CifarResNet
from das.spaces.base import SearchSpace
from das.spaces.registry import register_space
from das.spaces.choices import distinct_positive
from das.spec import ArchSpec

#: BasicBlocks per stage, as in DisWOT's ResNet space.
DEPTHS: tuple[int, ...] = (1, 3, 5, 7)

#: Width multipliers per stage: ResNet-20's widths in the middle, half to one and a half of them
#: (8-24, 16-48, 32-96 channels at C=16, all whole), in steps of a quarter.
MULTIPLIERS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)

STAGES = 3


def stage_widths(C: int, width: Sequence[float]) -> tuple[int, ...]:
    """Channels of the three stages: C·2^s·m_s rounded half up, at least 1."""
    return tuple(max(1, math.floor(C * 2**s * m + 0.5)) for s, m in enumerate(width))


def narrowing_block(in_channels: int, channels: int, stride: int) -> nn.Module:
    """A BasicBlock whose shortcut is a 1×1 conv + BN (option B) where it narrows, else the teachers' own."""
    block = BasicBlock(in_channels, channels, stride)
    if channels < in_channels:
        block.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
            nn.BatchNorm2d(channels),
        )
    return block


def resnet_cifar(blocks: Sequence[int], widths: Sequence[int], num_classes: int) -> CifarResNet:
    """The network of per-stage block counts and channels (see the module docstring)."""
    return CifarResNet(tuple(blocks), num_classes=num_classes, widths=tuple(widths), block=narrowing_block)


@register_space
class ResNetCifarSpace(SearchSpace):
    """CIFAR ResNets with BasicBlocks and a width multiplier per stage: 4³ × 5³ = 8,000 networks.

    Args:
        C: channels of stage 1 at multiplier 1 (stages 2 and 3 double it); ResNet-20 uses 16.
        depths: the BasicBlock counts a stage may have.
        multipliers: the width multipliers a stage may have.
    """

    name = "resnet_cifar"
    finite = True

    def __init__(self, C: int = 16, depths: Sequence[int] = DEPTHS, multipliers: Sequence[float] = MULTIPLIERS) -> None:
        if isinstance(C, bool) or not isinstance(C, int) or C < 1:
            raise DasError(f"resnet_cifar C must be a positive integer, got {C!r} (ResNet-20 uses C=16)")
        self.depths = distinct_positive("resnet_cifar", "depths", depths, int, DEPTHS)
        self.multipliers = distinct_positive("resnet_cifar", "multipliers", multipliers, float, MULTIPLIERS)
        self.C = C
        super().__init__(C=C, depths=self.depths, multipliers=self.multipliers)

    @property
    def size(self) -> int:
        """How many networks the space holds."""
        return (len(self.depths) * len(self.multipliers)) ** STAGES

    def suggest(self, trial: optuna.Trial) -> ArchSpec:
        blocks = [trial.suggest_categorical(f"stage{s}_blocks", self.depths) for s in range(1, STAGES + 1)]
        width = [trial.suggest_categorical(f"stage{s}_width", self.multipliers) for s in range(1, STAGES + 1)]
        return self.spec(blocks=blocks, width=width)

    def build(self, spec: ArchSpec, num_classes: int) -> CifarResNet:
        if spec.space != self.name:
            raise DasError(f"cannot build a {spec.space!r} architecture with the {self.name!r} space")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise DasError(f"num_classes must be a positive integer, got {num_classes!r}")
        blocks, width = self._parse(dict(spec.choices))
        return resnet_cifar(blocks, stage_widths(self.C, width), num_classes)

    def enumerate(self) -> Iterator[ArchSpec]:
        """Every member, block counts varying slowest and stage 3's multiplier fastest."""
        for blocks in itertools.product(self.depths, repeat=STAGES):
            for width in itertools.product(self.multipliers, repeat=STAGES):
                yield self.spec(blocks=blocks, width=width)

    def canonical(self, spec: ArchSpec) -> str:
        """The spec in its standard form: no two members compute the same function."""
        return self.spec(**dict(spec.choices)).to_json()

    def spec(self, **choices: Any) -> ArchSpec:
        """A spec from ``blocks=(b1, b2, b3)`` and ``width=(m1, m2, m3)``, validated."""
        blocks, width = self._parse(choices)
        return super().spec(blocks=blocks, width=width)

    def smallest(self) -> ArchSpec:
        """The member with the fewest parameters and FLOPs: fewest blocks, narrowest stages."""
        return self.spec(blocks=[min(self.depths)] * STAGES, width=[min(self.multipliers)] * STAGES)

    def largest(self) -> ArchSpec:
        """The member with the most parameters and FLOPs: most blocks, widest stages."""
        return self.spec(blocks=[max(self.depths)] * STAGES, width=[max(self.multipliers)] * STAGES)

    def _parse(self, choices: dict[str, Any]) -> tuple[tuple[int, ...], tuple[float, ...]]:
        if set(choices) != {"blocks", "width"}:
            raise DasError(
                f"a resnet_cifar spec takes two choices, blocks=[b1, b2, b3] and width=[m1, m2, m3], got {sorted(choices)}"
            )
        blocks = _per_stage("blocks", choices["blocks"], self.depths)
        width = _per_stage("width", choices["width"], self.multipliers)
        return tuple(int(b) for b in blocks), tuple(float(m) for m in width)


def _per_stage(key: str, values: Any, accepted: tuple) -> tuple:
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) != STAGES:
        raise DasError(f"resnet_cifar {key} must list one value per stage ({STAGES}), got {values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or v not in accepted:
            raise DasError(f"resnet_cifar {key} {list(values)!r} has {v!r}; accepted per stage: {', '.join(map(str, accepted))}")
    return tuple(values)
