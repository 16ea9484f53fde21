"""DisWOT: teacher/student similarity at initialisation, as its authors compute it.

Dong, Li & Wei, "DisWOT: Student Architecture Search for Distillation WithOut Training",
CVPR 2023, and the authors' released code (README "Core Code": ``batch_similarity`` and
``channel_similarity``; ``exps/parse_nb201_distill.py``). A good student for a teacher is one
whose untrained features already relate the samples of a batch as the teacher's do (relation
term, after similarity-preserving KD) and whose classifier gradient already relates its
channels as the teacher's does (semantic term, after inter-channel correlation KD):

- relation: ``G = F Fᵀ`` (B×B) of the flattened final pre-pool feature maps, each row
  L2-normalised; distance ``‖G_t − G_s‖²_F / B²`` (the authors' ``batch_similarity``).
- semantic: ``W_g``, the gradient of the cross-entropy w.r.t. the classifier weights (K×C:
  class k's "grad-CAM" over the C channels). For every class k the C×C outer product
  ``M_k = w_k w_kᵀ`` of its row, each row of ``M_k`` L2-normalised; distance
  ``Σ_k ‖M_k^t − M_k^s‖²_F / (C·K)`` (the authors' ``channel_similarity`` with batch = K).
- score = −(relation + semantic): higher is better, an exact copy of the teacher scores 0.

Which teacher (``teacher_init``): the authors compare with a *randomly initialised* network of
the teacher's architecture (``network_weight_gaussian_init``: conv and linear weights N(0, 1),
biases 0, norm layers weight 1 bias 0, read in train mode); das does the same by default
(``random``) and offers ``trained``: the trained teacher read in eval mode, whose running
statistics are what it learnt.

Deliberate differences from the authors' code, each a case their code leaves undefined or a
choice made for a search (docs/reference.md, "DisWOT details"):
- widths: the authors' semantic term needs equal classifier widths. When the teacher's C_t and
  the student's C_s differ, the wider gradient is average-pooled over groups of adjacent
  channels to the narrower width (``F.adaptive_avg_pool1d``) before the outer products. Equal
  widths are untouched; no channel is dropped and nothing is learnt, so the score stays
  zero-cost.
- a row of the student's matrix with no direction (all-zero: a sample or channel that a dead
  network maps to zero) counts at the largest distance two unit rows can have, 4, so a network
  that ignores its input ranks last instead of above every real network.
- the student is scored at its own initialisation (the weights it will be trained from) with
  the probe batch das uses for every proxy; the authors re-initialise it N(0, 1) and draw a
  new batch per student. The relation term reads the final pre-pool map (their README);
  one script of theirs reads the pooled vector instead.

The classifier gradient is computed in closed form, ``∂L/∂W = (softmax(z) − onehot(y))ᵀ h / B``
with ``h`` the classifier input, which equals autograd's value (tested) without a backward pass.
The student's final map, classifier input and logits are read by hooks on the shared labelled
forward (need ``final_capture``), so DisWOT costs no pass of its own when fused with others.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from das.errors import DasError
from das.features import feature_points
from das.proxies.base import register_proxy
from das.proxies.context import Capture, ScoringContext, capture
from das.proxies.state import preserved
from das.relations import relation_matrix, row_distance

#: Which weights of the teacher a student is compared with (see the module docstring).
TEACHER_INITS = ("random", "trained")
DEFAULT_TEACHER_INIT = "random"


def classifier_weight_grad(classifier_input: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """∂ mean-CE / ∂W of a Linear classifier (K×C), in closed form."""
    residual = logits.double().softmax(dim=1)
    residual[torch.arange(len(targets)), targets] -= 1.0
    return residual.T @ classifier_input.double() / len(targets)


def match_width(weight_grad: torch.Tensor, channels: int) -> torch.Tensor:
    """A K×C gradient brought to ``channels`` columns by averaging adjacent channels.

    ``F.adaptive_avg_pool1d`` splits the C channels into ``channels`` contiguous groups (equal
    when C is a multiple) and averages each; a gradient already that wide is returned as it is.
    """
    if weight_grad.shape[1] == channels:
        return weight_grad
    if weight_grad.shape[1] < channels:
        raise ValueError(f"cannot widen a gradient of {weight_grad.shape[1]} channels to {channels}; pool the wider one")
    return F.adaptive_avg_pool1d(weight_grad.unsqueeze(0), channels).squeeze(0)


def semantic_matrices(weight_grad: torch.Tensor) -> torch.Tensor:
    """K×C×C: per class, the outer product of its gradient row with itself, rows L2-normalised."""
    g = weight_grad.double()
    return F.normalize(g.unsqueeze(2) * g.unsqueeze(1), dim=2)


def relation_distance(teacher: torch.Tensor, student: torch.Tensor) -> float:
    """‖G_t − G_s‖²_F / B² between two row-normalised B×B relation matrices."""
    return float(row_distance(teacher, student).sum() / teacher.numel())


def semantic_distance(teacher_grad: torch.Tensor, student_grad: torch.Tensor) -> float:
    """Σ_k ‖M_k^t − M_k^s‖²_F / (C·K) of two K×C classifier gradients (widths matched first)."""
    if teacher_grad.shape[0] != student_grad.shape[0]:
        raise DasError(
            f"teacher has {teacher_grad.shape[0]} classes but the student has {student_grad.shape[0]}; "
            "build the student with the teacher's num_classes"
        )
    channels = min(teacher_grad.shape[1], student_grad.shape[1])
    teacher = semantic_matrices(match_width(teacher_grad, channels))
    student = semantic_matrices(match_width(student_grad, channels))
    classes = teacher_grad.shape[0]
    return float(row_distance(teacher, student).sum() / (channels * classes))


def gaussian_init_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise as the DisWOT authors do: conv/linear weights N(0, 1), biases 0, norms 1/0."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator, dtype=m.weight.dtype).to(m.weight.device))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
                if getattr(m, "weight", None) is not None:
                    m.weight.fill_(1.0)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
    return model


def check_teacher_init(init: str) -> str:
    if init not in TEACHER_INITS:
        raise DasError(f"teacher init {init!r} is not one of {', '.join(TEACHER_INITS)} (random: the DisWOT authors' protocol)")
    return init


@dataclass(frozen=True)
class DisWOTReference:
    """The teacher's relation matrix and classifier gradient on the probe batch, computed once."""

    relation: torch.Tensor
    weight_grad: torch.Tensor

    @classmethod
    def from_capture(cls, cap: Capture, targets: torch.Tensor) -> DisWOTReference:
        return cls(relation_matrix(cap.final_map.double()), classifier_weight_grad(cap.classifier_input, cap.logits, targets))

    @classmethod
    def from_teacher(
        cls, teacher: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], init: str = DEFAULT_TEACHER_INIT, seed: int = 0
    ) -> DisWOTReference:
        """Read ``teacher`` on ``batch``: trained (eval mode) or a seeded random re-initialisation.

        ``random`` re-initialises a copy (the given teacher is untouched) with the authors'
        Gaussian init from a generator seeded with ``seed`` and reads it in train mode, as the
        authors do: a random network's running statistics mean nothing.
        """
        x, y = batch
        if check_teacher_init(init) == "random":
            generator = torch.Generator().manual_seed(seed)
            network = gaussian_init_(copy.deepcopy(teacher), generator).train()
            return cls.from_capture(capture(network, x, feature_points(network, x)), y)
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
    student = DisWOTReference.from_capture(cap, targets)
    return (
        relation_distance(ref.relation.to(student.relation.device), student.relation),
        semantic_distance(ref.weight_grad.to(student.weight_grad.device), student.weight_grad),
    )


@register_proxy("diswot_relation", needs={"final_capture"}, needs_teacher=True)
def diswot_relation(ctx: ScoringContext) -> float:
    """Negated sample-relation distance to the teacher."""
    return -_terms(ctx)[0]


@register_proxy("diswot_semantic", needs={"final_capture"}, needs_teacher=True)
def diswot_semantic(ctx: ScoringContext) -> float:
    """Negated per-class channel-correlation distance to the teacher."""
    return -_terms(ctx)[1]


@register_proxy("diswot", needs={"final_capture"}, needs_teacher=True)
def diswot(ctx: ScoringContext) -> float:
    """−(relation + semantic): 0 for a copy of the teacher, lower for worse students."""
    relation, semantic = _terms(ctx)
    return -(relation + semantic)
