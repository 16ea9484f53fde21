"""Teachers: the trained networks das distils from, built from one string.

A teacher spec is one of

- a registered name: ``resnet20``, ``resnet32``, ``resnet44``, ``resnet56``, ``resnet110``
  (the CIFAR ResNets of He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
  :mod:`teachers.cifar_resnet`), or anything added with :func:`register_teacher`
  (:mod:`teachers.registry`);
- ``timm:NAME``: a timm architecture (:mod:`teachers.timm_models`);
- ``torchvision:NAME``: a torchvision classification model (:mod:`teachers.torchvision_models`);
- ``package.module:function``: your own factory returning an ``nn.Module``
  (:mod:`teachers.imported`).

Weights only ever come from a local file (``checkpoint=``, loaded strictly by
:func:`das.nets.checkpoint.load_checkpoint`); das never downloads from a hub, so a run is
reproducible offline and a teacher cannot change under it. Every teacher answers
:func:`das.features.feature_points`: each module above says where its points come from.
"""

from __future__ import annotations

from torch import nn

from das.errors import DasError, close_matches_hint
from das.nets.tracing import DeclaredPoints
from teachers import cifar_resnet  # noqa: F401  (registers the built-in teachers)
from das.nets.checkpoint import load_checkpoint
from teachers.imported import imported_teacher
from teachers.registry import TEACHERS, register_teacher, teacher_names
from teachers.timm_models import timm_teacher
from teachers.torchvision_models import torchvision_teacher

__all__ = ["TEACHERS", "DeclaredPoints", "create_teacher", "load_checkpoint", "register_teacher", "teacher_names"]


def create_teacher(spec: str, checkpoint: str | None = None, num_classes: int = 10, what: str = "teacher") -> nn.Module:
    """Build the teacher named by ``spec`` and load ``checkpoint`` into it strictly.

    Args:
        spec: a registered name, ``timm:NAME``, ``torchvision:NAME`` or
            ``package.module:function`` (see the module docstring).
        checkpoint: path of a local weights file; None leaves the initial (random) weights.
        num_classes: outputs of the classifier.
        what: what the network is to the caller ("teacher", or "student" when train.py builds
            a student from a teacher spec), for error messages.

    Returns:
        The model, in training mode as built; the caller freezes it and calls ``eval()``.

    Raises:
        DasError: an unknown name, an unimportable factory, or a checkpoint that does not fit.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DasError(f"{what} spec must be a non-empty string such as 'resnet20' or 'timm:resnet18', got {spec!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise DasError(f"num_classes must be a positive integer, got {num_classes!r}")
    spec = spec.strip()
    source, sep, name = spec.partition(":")
    if not sep:
        if spec not in TEACHERS:
            raise DasError(
                f"unknown {what} {spec!r}: {close_matches_hint(spec, TEACHERS.names())} "
                "(or use timm:NAME, torchvision:NAME or package.module:function)"
            )
        model = TEACHERS.create(spec, num_classes=num_classes)
    elif source == "timm":
        model = timm_teacher(name, num_classes)
    elif source == "torchvision":
        model = torchvision_teacher(name, num_classes)
    else:
        model = imported_teacher(source, name, num_classes, spec, what=what)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return model

