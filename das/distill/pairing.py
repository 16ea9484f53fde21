"""Stage-by-stage pairing of student and teacher feature maps for feature distillation.

Multi-stage hint losses (FitNets, Romero et al., ICLR 2015; and the stage-wise feature losses
that followed) compare a student map with the teacher map of the same resolution. The feature
contract (:mod:`das.features`) gives both networks' map points with their reductions, so the
pairing is read from it instead of hard-coded layer names:

- :func:`pair_stages`, the default rule: one pair per student resolution, each student map
  point matched with the teacher map point of the same reduction, or else the nearest one in
  ``|log2 reduction difference|`` (ties go to the deeper teacher point, whose features are
  more semantic). The student side is its map points in network order, except that the final
  map replaces the last stage point when both have the same reduction: they are maps of one
  resolution, and the final one is the map the classifier pools. So ResNet-20 against
  ResNet-56 gives three pairs (``layer1``/``layer2``/``layer3``, all of matching size), and an
  NB201 student gives ``cells.{N-1}``, ``cells.{2N}``, ``lastact``.
- :func:`pair_by_names`: pairs chosen by module names (e.g. from a config), validated against
  the declared map points.

:class:`FeatureProjectors` holds one projector per pair (a 1×1 convolution where the widths
differ, identity where they agree) and aligns spatial sizes, so a loss receives maps of equal
shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from das.distill.losses import match_spatial, projector
from das.errors import DasError, close_matches_hint
from das.features import FeaturePoint, map_points


@dataclass(frozen=True)
class FeaturePair:
    """A student feature map and the teacher feature map it is distilled from."""

    student: FeaturePoint
    teacher: FeaturePoint

    def describe(self) -> str:
        """One line for the training log, e.g. ``layer1 (16 ch, /1) -> layer1 (16 ch, /1)``."""
        return f"{_describe(self.student)} -> {_describe(self.teacher)}"


def _describe(point: FeaturePoint) -> str:
    return f"{point.module} ({point.channels} ch, /{point.reduction})"


def pair_stages(student_points: Sequence[FeaturePoint], teacher_points: Sequence[FeaturePoint]) -> list[FeaturePair]:
    """Pair each student resolution with the teacher map of the same or nearest reduction.

    Args:
        student_points: the student's feature points (any roles; logits are ignored).
        teacher_points: the teacher's feature points.

    Returns:
        The pairs in the student's network order (see the module docstring for which student
        points take part).
    """
    students = _student_maps(student_points)
    teachers = map_points(teacher_points)
    if not students or not teachers:
        side = "student" if not students else "teacher"
        raise DasError(f"the {side} declares no feature maps (role 'stage' or 'final'); give it a feature_points() with at least its final map")
    return [FeaturePair(s, _nearest(s, teachers)) for s in students]


def _student_maps(points: Sequence[FeaturePoint]) -> list[FeaturePoint]:
    maps = map_points(points)
    stages = [p for p in maps if p.role == "stage"]
    finals = [p for p in maps if p.role == "final"]
    if stages and finals and stages[-1].reduction == finals[0].reduction:
        return [p for p in maps if p is not stages[-1]]
    return maps


def _nearest(student: FeaturePoint, teachers: Sequence[FeaturePoint]) -> FeaturePoint:
    # Ties (several teacher points equally near, or at the same reduction) go to the later,
    # deeper one: min over (distance, -index).
    def key(item: tuple[int, FeaturePoint]) -> tuple[float, int]:
        index, teacher = item
        return abs(math.log2(student.reduction) - math.log2(teacher.reduction)), -index

    return min(enumerate(teachers), key=key)[1]


def pair_by_names(
    student_points: Sequence[FeaturePoint],
    teacher_points: Sequence[FeaturePoint],
    pairs: Sequence[tuple[str, str]],
) -> list[FeaturePair]:
    """Pairs given as ``(student module, teacher module)`` names of declared feature maps.

    Raises:
        DasError: no pairs, or a name that is not a declared feature map of its network (the
            message lists the valid names).
    """
    if not pairs:
        raise DasError("pair_by_names needs at least one (student module, teacher module) pair; use pair_stages for the default pairing")
    students = {p.module: p for p in map_points(student_points)}
    teachers = {p.module: p for p in map_points(teacher_points)}
    return [FeaturePair(_lookup("student", s, students), _lookup("teacher", t, teachers)) for s, t in pairs]


def _lookup(side: str, name: str, points: dict[str, FeaturePoint]) -> FeaturePoint:
    if name in points:
        return points[name]
    hint = close_matches_hint(name, points)
    close = f"; {hint}" if hint.startswith("did you mean") else ""
    raise DasError(f"{name!r} is not a {side} feature map; valid {side} names: {', '.join(points)}{close}")


class FeatureProjectors(nn.Module):
    """Project each paired student map to its teacher's width and align their spatial sizes.

    The larger map of a pair is average-pooled to the smaller size (``match_spatial``) before
    the student map is projected: a bias-free 1×1 convolution commutes with average pooling,
    so this gives the same result as projecting first, for less work.

    Args:
        pairs: the feature pairs, e.g. from :func:`pair_stages`.
    """

    def __init__(self, pairs: Sequence[FeaturePair]) -> None:
        super().__init__()
        self.pairs = list(pairs)
        self.projectors = nn.ModuleList(projector(p.student.channels, p.teacher.channels) for p in self.pairs)

    def forward(self, student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Aligned ``(projected student, teacher)`` maps, one per pair and in the pairs' order."""
        n = len(self.pairs)
        if len(student_maps) != n or len(teacher_maps) != n:
            raise DasError(f"FeatureProjectors has {n} pairs but got {len(student_maps)} student and {len(teacher_maps)} teacher maps; pass one of each per pair, in order")
        aligned = []
        for pair, proj, s, t in zip(self.pairs, self.projectors, student_maps, teacher_maps):
            if s.shape[1] != pair.student.channels or t.shape[1] != pair.teacher.channels:
                raise DasError(
                    f"pair {pair.describe()} got maps of {s.shape[1]} and {t.shape[1]} channels; "
                    "the declared feature points do not match the models' outputs"
                )
            s, t = match_spatial(s, t)
            aligned.append((proj(s), t))
        return aligned

    def extra_repr(self) -> str:
        return "; ".join(p.describe() for p in self.pairs)
