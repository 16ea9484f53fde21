"""The CIFAR ResNet teachers ``resnet20`` ... ``resnet110`` (He et al., CVPR 2016, §4.2).

The networks are :class:`das.nets.cifar_resnet.CifarResNet`, shared with the ``resnet_cifar``
search space; this module registers the paper's depths as teachers. The classes are re-exported
so ``teachers.cifar_resnet.CifarResNet`` keeps naming them.
"""

from __future__ import annotations

from das.nets.cifar_resnet import BasicBlock, CifarResNet, PadShortcut
from teachers.registry import register_teacher

__all__ = ["BasicBlock", "CifarResNet", "PadShortcut", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]


def _create(blocks: int, num_classes: int) -> CifarResNet:
    return CifarResNet(blocks, num_classes=num_classes)


@register_teacher
def resnet20(num_classes: int = 10) -> CifarResNet:
    return _create(3, num_classes)


@register_teacher
def resnet32(num_classes: int = 10) -> CifarResNet:
    return _create(5, num_classes)


@register_teacher
def resnet44(num_classes: int = 10) -> CifarResNet:
    return _create(7, num_classes)


@register_teacher
def resnet56(num_classes: int = 10) -> CifarResNet:
    return _create(9, num_classes)


@register_teacher
def resnet110(num_classes: int = 10) -> CifarResNet:
    return _create(18, num_classes)
