"""DisWOT: teacher/student similarity at initialisation.

Dong et al., "DisWOT: Student Architecture Search for Distillation WithOut Training",
CVPR 2023. A good student for a teacher is one whose *untrained* features already relate the
samples of a batch the way the trained teacher's do (relation term, after similarity-preserving
KD) and whose classifier already relates the classes the way the teacher's does (semantic
term, after inter-channel correlation KD on class-activation information):

- relation: per-sample Gram matrix ``G = F Fᵀ`` (B×B) of the flattened final feature maps, each
  row L2-normalised; distance ``‖G_t − G_s‖²_F / B²``.
- semantic: ``W_g`` = gradient of the cross-entropy loss w.r.t. the classifier weights (K×C,
  the class-activation information); correlation ``A = W_g W_gᵀ`` (K×K), each row
  L2-normalised; distance ``‖A_t − A_s‖²_F / K²``.
- score = −(relation + semantic), so higher is better and an exact copy of the teacher scores
  the maximum, 0.

This follows the paper's definition. The authors' released code differs in places (one of its
scripts applies the relation term to pooled features of a single sample); das does not copy
those variants. Both matrices are B×B or K×K whatever the channel counts, so student and
teacher widths may differ, and both are invariant to the order of the batch.

The classifier gradient is computed in closed form — for a Linear classifier and mean
cross-entropy, ``∂L/∂W = (softmax(z) − onehot(y))ᵀ h / B`` with ``h`` the classifier input —
which equals autograd's value (tested) but needs no backward pass and works on a frozen teacher.
The student's final map, classifier input and logits are read by hooks on the shared labelled
forward (need ``final_capture``), so DisWOT costs no pass of its own when fused with others.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from das.errors import DasError
from das.features import feature_points
from das.proxies.base import register_proxy
from das.proxies.context import Capture, ScoringContext, capture
from das.proxies.state import preserved


def relation_matrix(feature_map: torch.Tensor) -> torch.Tensor:
    """B×B sample-relation matrix of a feature map, rows L2-normalised (zero rows stay zero)."""
    flat = feature_map.reshape(feature_map.shape[0], -1).double()
    return F.normalize(flat @ flat.T, dim=1)


def classifier_weight_grad(classifier_input: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """∂ mean-CE / ∂W of a Linear classifier (K×C), in closed form."""
    residual = logits.double().softmax(dim=1)
    residual[torch.arange(len(targets)), targets] -= 1.0
    return residual.T @ classifier_input.double() / len(targets)


def semantic_matrix(weight_grad: torch.Tensor) -> torch.Tensor:
    """K×K class-correlation matrix of the classifier gradient, rows L2-normalised."""
    return F.normalize(weight_grad @ weight_grad.T, dim=1)


def matrix_distance(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """Squared Frobenius distance between row-normalised matrices, divided by the entries.

    A zero row of ``candidate`` (a sample or class the network maps to all-zero features, as
    an NB201 cell whose output is cut off by ``none`` edges does) has no direction, so the
    normalisation is undefined there. The paper does not cover this case; das counts such a
    row at the largest distance two unit rows can have, 4, so a network that ignores its input
    ranks last instead of scoring better than every real network (a zero row would otherwise
    cost only 1).
    """
    per_row = ((reference - candidate) ** 2).sum(dim=1)
    dead = candidate.abs().sum(dim=1) == 0
    per_row = torch.where(dead, torch.full_like(per_row, 4.0), per_row)
    return float(per_row.sum() / reference.numel())


@dataclass(frozen=True)
class DisWOTReference:
    """The teacher's two matrices on the probe batch, computed once per search."""

    relation: torch.Tensor
    semantic: torch.Tensor

    @classmethod
    def from_capture(cls, cap: Capture, targets: torch.Tensor) -> DisWOTReference:
        grad = classifier_weight_grad(cap.classifier_input, cap.logits, targets)
        return cls(relation_matrix(cap.final_map), semantic_matrix(grad))

    @classmethod
    def from_teacher(cls, teacher: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> DisWOTReference:
        """The trained teacher is read in eval mode (its running statistics are what it learnt)."""
        x, y = batch
        with preserved(teacher):
            teacher.eval()
            cap = capture(teacher, x, feature_points(teacher, x))
        return cls.from_capture(cap, y)


def _terms(ctx: ScoringContext) -> tuple[float, float]:
    return ctx.memo("diswot_terms", lambda: _distances(ctx))


def _distances(ctx: ScoringContext) -> tuple[float, float]:
    ref = ctx.teacher
    if not isinstance(ref, DisWOTReference):
        raise DasError("DisWOT proxies need a teacher: pass teacher= to score() (a model or a DisWOTReference)")
    cap = ctx.first_capture
    targets = ctx.batches[0][1]
    if ref.relation.shape[0] != cap.final_map.shape[0]:
        raise DasError(f"the teacher reference was computed on {ref.relation.shape[0]} samples but the probe batch has {cap.final_map.shape[0]}; use the same batch")
    if ref.semantic.shape[0] != cap.logits.shape[1]:
        raise DasError(f"teacher has {ref.semantic.shape[0]} classes but the student has {cap.logits.shape[1]}; build the student with the teacher's num_classes")
    student = DisWOTReference.from_capture(cap, targets)
    return (
        matrix_distance(ref.relation.to(student.relation.device), student.relation),
        matrix_distance(ref.semantic.to(student.semantic.device), student.semantic),
    )


@register_proxy("diswot_relation", needs={"final_capture"}, needs_teacher=True)
def diswot_relation(ctx: ScoringContext) -> float:
    """Negated sample-relation distance to the teacher."""
    return -_terms(ctx)[0]


@register_proxy("diswot_semantic", needs={"final_capture"}, needs_teacher=True)
def diswot_semantic(ctx: ScoringContext) -> float:
    """Negated class-correlation distance to the teacher."""
    return -_terms(ctx)[1]


@register_proxy("diswot", needs={"final_capture"}, needs_teacher=True)
def diswot(ctx: ScoringContext) -> float:
    """−(relation + semantic): 0 for a copy of the teacher, lower for worse students."""
    relation, semantic = _terms(ctx)
    return -(relation + semantic)
