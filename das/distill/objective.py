"""The training objective: registered loss terms on the student's and the teacher's outputs, weighted and summed.

Kept apart from where the teacher's outputs come from, so the Lightning module (a live teacher
forward per batch) and the population trainer (teacher outputs cached once per image) train on
one and the same objective.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from das.distill.losses import LossInputs, LossTerm, LossValues, bn_weights
from das.distill.pairing import FeatureProjectors

#: The inputs that make a term a feature term (it needs the pairs' maps, and projectors for some).
FEATURE_INPUTS = frozenset({"student_features", "teacher_features", "student_projected"})

#: The inputs read from the student's own parameters, not from a batch: a term reading only
#: these is a regulariser (``bn_l1``), computed once per step from the student module.
PARAMETER_INPUTS = frozenset({"student_bn_weights"})


def is_regulariser(term: LossTerm) -> bool:
    """Whether ``term`` reads only the student's parameters (so it applies with or without a teacher, at its own weight)."""
    return set(term.loss.needs) <= PARAMETER_INPUTS


class DistillObjective:
    """Σ weight · term over ``terms``: logit terms once, feature terms averaged over the feature pairs."""

    def __init__(self, terms: Sequence[LossTerm]) -> None:
        self.terms = list(terms)
        self.feature_terms = [t for t in self.terms if set(t.loss.needs) & FEATURE_INPUTS]
        self.logit_terms = [t for t in self.terms if t not in self.feature_terms]

    @property
    def uses_features(self) -> bool:
        """Whether any term reads feature maps (else the pairs' maps need not be captured)."""
        return bool(self.feature_terms)

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None,
                 student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor],
                 projectors: FeatureProjectors, student: nn.Module | None = None) -> LossValues:
        """The weighted total and each term's value; maps are given pair by pair, in the pairs' order.

        ``student`` is read only by regularisers of its parameters (``bn_l1``).
        """
        reads_bn = student is not None and any("student_bn_weights" in t.loss.needs for t in self.logit_terms)
        inputs = LossInputs(student_logits=logits, teacher_logits=teacher_logits, targets=targets,
                            student_bn_weights=bn_weights(student) if reads_bn else None)
        values = {t.name: t(inputs) for t in self.logit_terms}
        if self.feature_terms:
            raw = [LossInputs(student_features=s, teacher_features=t) for s, t in zip(student_maps, teacher_maps)]
            projected = raw
            if any("student_projected" in t.loss.needs for t in self.feature_terms):
                projected = [LossInputs(student_features=s, student_projected=p, teacher_features=t)
                             for s, (p, t) in zip(student_maps, projectors(list(student_maps), list(teacher_maps)))]
            for term in self.feature_terms:
                per_pair = projected if "student_projected" in term.loss.needs else raw
                values[term.name] = torch.stack([term(i) for i in per_pair]).mean()
        weights = {t.name: t.weight for t in self.terms}
        return LossValues(sum(weights[n] * v for n, v in values.items()), values)
