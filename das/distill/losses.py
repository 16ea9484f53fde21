"""Distillation losses.

- KD (Hinton et al., 2015): KL(teacher ‖ student) on logits softened by temperature T, scaled
  by T² so its gradients keep their size as T changes.
- DKD (Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation", CVPR 2022, Sec. 3 and
  Fig. 1): KD split at the label ``t`` into TCKD, the KL between the binary distributions
  ``b = [p_t, 1 − p_t]`` of teacher and student, and NCKD, the KL between their distributions over
  the non-target classes renormalised to sum to 1. The paper shows ``KD = TCKD + (1 − p_t^T)·NCKD``
  (``p_t^T`` the teacher's target probability): a confident teacher suppresses NCKD. DKD
  weights the two freely: ``α·TCKD + β·NCKD``, each at temperature T and scaled by T² as KD is.
- Cosine feature loss: ``scale · (1 − cos(proj(f_s), f_t))``, the cosine taken over channels at
  each spatial position and averaged; ``proj`` is a learnable 1×1 convolution where the student
  and teacher widths differ. When their spatial sizes differ, the larger map is average-pooled
  to the smaller one (a student may downsample on a different schedule).
- Relation loss (the training form of DisWOT's relation term; Dong, Li & Wei, "DisWOT: Student
  Architecture Search for Distillation WithOut Training", CVPR 2023, after Tung & Mori,
  "Similarity-Preserving Knowledge Distillation", ICCV 2019): ``‖G_t − G_s‖²_F / B²`` with
  ``G = F Fᵀ`` (B×B) of the flattened feature maps, rows L2-normalised.
- FitNet hint loss (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015): the mean
  squared error between the projected student map and the teacher map.
- BatchNorm-scale L1 (Liu et al., "Learning Efficient Convolutional Networks through Network
  Slimming", ICCV 2017, eq. 1): ``Σ|γ|`` over every BatchNorm scale of the student, the sparsity
  penalty that lets :mod:`das.prune.slim` remove the channels it drives to 0. Its weight is the
  paper's λ (1e-4 to 1e-5 there); autograd gives the paper's subgradient λ·sign(γ) on each γ.
  A regulariser of the student's own parameters, not of its outputs: it is kept, at its weight,
  with or without a teacher.

The loss registry
-----------------
Every loss above is registered in :data:`LOSSES` by name (``ce``, ``kd``, ``dkd``, ``cosine``,
``relation``, ``fitnet``, ``bn_l1``) as a :class:`Loss`: a function of plain tensors whose positional
parameters name the tensors it reads (fields of :class:`LossInputs`) and whose keyword-only
parameters are its options. Teacher tensors are detached inside every loss, so no gradient
reaches the teacher even if a caller forgets ``torch.no_grad()``. Add a loss with
:func:`register_loss`.

A training objective is a :class:`LossSpec`: named terms with non-negative weights, built from a
config mapping that jsonargparse/LightningCLI read from YAML as :data:`LossConfig`::

    losses:
      ce: 1.0                              # a bare number is the weight
      kd: {weight: 1.0, temperature: 4.0}  # a mapping gives the weight (default 1) and options
      cosine: {weight: 1.0, scale: 1.0}

``LossSpec.from_config(cfg)(inputs)`` returns :class:`LossValues`: the weighted total and each
term's unweighted value (for logging). A term of weight 0 is neither computed nor reported.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from das.errors import DasError, close_matches_hint
from das.registry import Registry
from das.relations import relation_matrix, row_distance


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD: T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


def dkd_parts(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The two distributions DKD compares, as log-probabilities at temperature T.

    Returns ``log b`` (B×2: ``[log p_t, log(1 − p_t)]``) and ``log p̂`` (B×K: the softmax over the
    non-target classes, with 0 in the label's column, which the caller must leave out of any sum).
    Both come from log-softmaxes and a log-sum-exp, never from the log of a sum of probabilities,
    so they stay finite for any finite logits (``1 − p_t`` is never formed from ``p_t``).
    """
    is_label = targets[:, None] == torch.arange(logits.shape[1], device=logits.device)  # B×K; a mask, not indexing: no device sync
    z = logits / temperature
    log_p = F.log_softmax(z, dim=1)
    log_p_target = log_p.gather(1, targets[:, None])
    log_p_rest = torch.logsumexp(log_p.masked_fill(is_label, -math.inf), dim=1, keepdim=True)
    # The label's column is −∞ in the softmax (so it takes no mass), then 0 in both networks, so it adds
    # exp(0)·(0 − 0) = 0 to the KL; left at −∞, KL's exp(−∞)·(−∞ − (−∞)) would be NaN.
    log_p_hat = F.log_softmax(z.masked_fill(is_label, -math.inf), dim=1).masked_fill(is_label, 0.0)
    return torch.cat([log_p_target, log_p_rest], dim=1), log_p_hat


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
             alpha: float, beta: float, temperature: float) -> torch.Tensor:
    """Decoupled KD: T² · (α · KL(b^T ‖ b^S) + β · KL(p̂^T ‖ p̂^S)), averaged over the batch.

    ``b = [p_t, 1 − p_t]`` is the probability of the label ``t`` and of the rest; ``p̂`` the
    distribution over the classes other than ``t``, renormalised. No gradient is blocked here:
    detach the teacher's logits before calling (the registered ``dkd`` does).

    Raises:
        DasError: fewer than 2 classes (no non-target class to distil), or shapes that disagree.
    """
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape or targets.shape != student_logits.shape[:1]:
        raise DasError(f"dkd needs B×K student and teacher logits and B labels, got {tuple(student_logits.shape)}, "
                       f"{tuple(teacher_logits.shape)} and {tuple(targets.shape)}")
    if student_logits.shape[1] < 2:
        raise DasError(f"dkd needs at least 2 classes (NCKD compares the non-target ones), got {student_logits.shape[1]}; use ce alone")
    b_s, hat_s = dkd_parts(student_logits, targets, temperature)
    b_t, hat_t = dkd_parts(teacher_logits, targets, temperature)
    tckd = F.kl_div(b_s, b_t, reduction="batchmean", log_target=True)
    nckd = F.kl_div(hat_s, hat_t, reduction="batchmean", log_target=True)  # the label's column is 0 − 0 in both: adds 0
    return (alpha * tckd + beta * nckd) * temperature**2


def match_spatial(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two feature maps to the spatial size of the smaller."""
    if a.shape[-2:] == b.shape[-2:]:
        return a, b
    size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
    return F.adaptive_avg_pool2d(a, size), F.adaptive_avg_pool2d(b, size)


def cosine_feature_loss(student_map: torch.Tensor, teacher_map: torch.Tensor, scale: float) -> torch.Tensor:
    """scale · mean(1 − cos) over positions; maps must have equal channels (project first)."""
    s, t = match_spatial(student_map, teacher_map)
    return scale * (1.0 - F.cosine_similarity(s, t, dim=1, eps=1e-8)).mean()


def projector(student_channels: int, teacher_channels: int) -> nn.Module:
    """A learnable 1×1 convolution from student to teacher width, or identity when they agree."""
    if student_channels == teacher_channels:
        return nn.Identity()
    return nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)


def _check_channels(name: str, student_map: torch.Tensor, teacher_map: torch.Tensor) -> None:
    if student_map.shape[:2] != teacher_map.shape[:2]:
        raise DasError(
            f"{name} needs student and teacher maps of equal batch and channels, got {tuple(student_map.shape)} and "
            f"{tuple(teacher_map.shape)}; project the student map to the teacher's width first (das.distill.losses.projector)"
        )


def relation_loss(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """‖G_t − G_s‖²_F / B², the value DisWOT's relation proxy scores (a dead student row costs 4).

    The maps may differ in channels and spatial size: only the batch sizes must agree.
    """
    if student_map.shape[0] != teacher_map.shape[0]:
        raise DasError(f"relation loss needs equal batch sizes, got student {student_map.shape[0]} and teacher {teacher_map.shape[0]}")
    g_t, g_s = relation_matrix(teacher_map), relation_matrix(student_map)
    return row_distance(g_t, g_s).sum() / g_t.numel()


def fitnet_loss(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """Mean squared error between equal-width maps (project the student first), larger map pooled."""
    _check_channels("fitnet loss", student_map, teacher_map)
    s, t = match_spatial(student_map, teacher_map)
    return F.mse_loss(s, t)


# ----------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class LossInputs:
    """The tensors a training step can hand to the losses; a loss reads only the ones it names.

    Attributes:
        student_logits: B×K student logits.
        teacher_logits: B×K teacher logits.
        targets: B class labels.
        student_features: the student's feature map as it is (read by ``relation``).
        teacher_features: the teacher's feature map.
        student_projected: the student's map projected to the teacher's width (read by
            ``cosine`` and ``fitnet``); defaults to ``student_features`` when widths agree.
        student_bn_weights: every BatchNorm scale γ of the student in one vector
            (:func:`bn_weights`; read by ``bn_l1``).
    """

    student_logits: torch.Tensor | None = None
    teacher_logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    student_features: torch.Tensor | None = None
    teacher_features: torch.Tensor | None = None
    student_projected: torch.Tensor | None = None
    student_bn_weights: torch.Tensor | None = None

    def get(self, name: str) -> torch.Tensor | None:
        value = getattr(self, name)
        if value is None and name == "student_projected":
            return self.student_features
        return value


INPUT_NAMES = tuple(f.name for f in fields(LossInputs))


@dataclass(frozen=True)
class Range:
    """An interval of accepted option values: ``[low, high)``, or ``(low, high)`` without ``include_low``."""

    low: float
    high: float = math.inf
    include_low: bool = True

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.include_low else value > self.low
        return above and value < self.high

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>=' if self.include_low else '>'} {self.low:g}"
        return f"in {'[' if self.include_low else '('}{self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class Loss:
    """A registered loss.

    Attributes:
        name: the registry name.
        fn: computes the loss from the tensors in ``needs`` (positionally) and its options.
        needs: the :class:`LossInputs` fields it reads, in ``fn``'s order.
        defaults: each option's default value.
        ranges: the accepted values of the options that have a limit.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    needs: tuple[str, ...]
    defaults: Mapping[str, float]
    ranges: Mapping[str, Range] = field(default_factory=dict)

    def __call__(self, *tensors: torch.Tensor, **options: float) -> torch.Tensor:
        return self.fn(*tensors, **options)

    def check_options(self, options: Mapping[str, object]) -> dict[str, float]:
        """The options as floats, or a DasError naming the first bad one."""
        checked: dict[str, float] = {}
        for key, value in options.items():
            if key not in self.defaults:
                accepted = close_matches_hint(key, self.defaults) if self.defaults else "it takes no options"
                raise DasError(f"loss {self.name!r} has no option {key!r}: {accepted}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DasError(f"loss {self.name!r} option {key}={value!r} must be a finite number")
            if key in self.ranges and value not in self.ranges[key]:
                raise DasError(f"loss {self.name!r} option {key}={value!r} must be {self.ranges[key]}")
            checked[key] = float(value)
        return checked


LOSSES: Registry[Loss] = Registry("distillation loss")


def register_loss(name: str, *, ranges: Mapping[str, Range] | None = None) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator: register ``fn`` as loss ``name``.

    ``fn``'s positional parameters must be :class:`LossInputs` field names (the tensors it
    reads); its keyword-only parameters, each with a default, are its options.

    Args:
        name: the registry name.
        ranges: accepted values of options that have a limit (e.g. ``{"temperature": Range(0, include_low=False)}``).
    """

    def decorator(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        params = inspect.signature(fn).parameters.values()
        needs = tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
        defaults = {p.name: p.default for p in params if p.kind == p.KEYWORD_ONLY}
        if unknown := set(needs) - set(INPUT_NAMES):
            raise ValueError(f"loss {name!r} reads {sorted(unknown)}, which are not LossInputs fields {INPUT_NAMES}")
        if any(v is inspect.Parameter.empty for v in defaults.values()):
            raise ValueError(f"every option of loss {name!r} needs a default")
        if extra := set(ranges or {}) - set(defaults):
            raise ValueError(f"loss {name!r} has ranges for {sorted(extra)}, which are not its options")
        LOSSES.add(name, Loss(name, fn, needs, defaults, dict(ranges or {})))
        return fn

    return decorator


@register_loss("ce", ranges={"label_smoothing": Range(0.0, 1.0)})
def _ce(student_logits: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy with the labels, mixed with a uniform target by ``label_smoothing`` ∈ [0, 1)."""
    return F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)


@register_loss("kd", ranges={"temperature": Range(0.0, include_low=False)})
def _kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 4.0) -> torch.Tensor:
    """Hinton KD, T² · KL(softmax(t/T) ‖ softmax(s/T)), batch mean; T > 0."""
    return kd_loss(student_logits, teacher_logits.detach(), temperature)


@register_loss("dkd", ranges={"alpha": Range(0.0), "beta": Range(0.0), "temperature": Range(0.0, include_low=False)})
def _dkd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
         alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> torch.Tensor:
    """Decoupled KD, T² · (α·TCKD + β·NCKD), batch mean; α ≥ 0, β ≥ 0, T > 0.

    The defaults are the paper's CIFAR-100 setting, also the default of the authors' code
    (α = 1, β = 8, T = 4). Their per-pair CIFAR-100 configs lower β to 2 (ResNet-56 → ResNet-20,
    ResNet-110 → ResNet-32) or 6 (WRN-40-2 → WRN-16-2 and WRN-40-1, VGG-13 → VGG-8 and
    MobileNetV2); their ImageNet configs use T = 1 with β = 0.5 (ResNet-34 → ResNet-18) or 2
    (ResNet-50 → MobileNetV1). With α = β = 1 this is not KD: KD weights NCKD by 1 − p_t^T.

    Deliberate differences from the authors' code (mdistiller, ``mdistiller/distillers/DKD.py``):

    - No warmup. Their distiller multiplies the loss by ``min(epoch / warmup, 1)``, epochs counted
      from 1 (warmup 20 on CIFAR-100; 1, so no ramp, on ImageNet). A das loss is a function of
      tensors and knows no epoch; das warms up the learning rate instead
      (``model.warmup_epochs``), which ramps every term, CE included, not the DKD term alone.
    - Computed in log space. They take the log of a sum of softmax probabilities for ``b``, which
      is ``log 0 = −∞`` (an infinite or NaN loss) once the student's target logit leads the
      others by about 100·T in float32; here ``log(1 − p_t)`` is a log-sum-exp of log-softmaxes.
      For NCKD they subtract 1000 from the target's tempered logit before a softmax, which
      leaves it a weight of exp((z_t − z_max)/T − 1000): nothing in float32 unless the target
      logit leads by nearly 1000·T; here its column is set to −∞, then left out.
      Where theirs is finite the two agree (to 1e-6 in float64; tests/distill/test_dkd.py).
    """
    return dkd_loss(student_logits, teacher_logits.detach(), targets, alpha, beta, temperature)


@register_loss("cosine", ranges={"scale": Range(0.0)})
def _cosine(student_projected: torch.Tensor, teacher_features: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
    """``scale`` · mean(1 − cos) over positions between the projected student map and the teacher's.

    ``scale`` multiplies this term's gradient, so, next to CE and KD (whose sizes do not depend
    on it), it sets the balance between matching features and matching outputs; in a
    :class:`LossSpec` the term's weight multiplies it again. Written bare (``cosine: 1.0``) the
    scale is 1, as in train.py's default recipe; 400 gained most on ResNet-56 → ResNet-20 but cost
    small NB201 cells (docs/guide.md: "Distillation"; docs/decisions.md: "The default cosine scale").
    """
    _check_channels("cosine loss", student_projected, teacher_features)
    return cosine_feature_loss(student_projected, teacher_features.detach(), scale)


@register_loss("relation")
def _relation(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """DisWOT's sample-relation distance between the raw maps (no projection: Gram matrices are B×B)."""
    return relation_loss(student_features, teacher_features.detach())


@register_loss("fitnet")
def _fitnet(student_projected: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """FitNet hint: MSE between the projected student map and the teacher map."""
    return fitnet_loss(student_projected, teacher_features.detach())


def bn_weights(model: nn.Module) -> torch.Tensor:
    """Every affine BatchNorm scale γ of ``model``, concatenated (gradients flow back to each γ).

    Raises:
        DasError: ``model`` has no affine BatchNorm, so an L1 on its scales would be 0 and do nothing.
    """
    scales = [m.weight.flatten() for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
    if not scales:
        raise DasError(f"loss 'bn_l1' penalises BatchNorm scales, and {type(model).__name__} has no affine BatchNorm; drop bn_l1 from the losses")
    return torch.cat(scales)


@register_loss("bn_l1")
def _bn_l1(student_bn_weights: torch.Tensor) -> torch.Tensor:
    """Σ|γ| over the student's BatchNorm scales (network slimming's sparsity penalty; the weight is λ)."""
    return student_bn_weights.abs().sum()


# ----------------------------------------------------------------------------- combining losses

#: The YAML/CLI form of a :class:`LossSpec`: loss name → weight, or → ``{weight: w, option: value, ...}``.
LossConfig = dict[str, float | dict[str, float]]


@dataclass(frozen=True)
class LossTerm:
    """One weighted loss of a training objective.

    Args:
        name: a registered loss (see ``LOSSES.names()``).
        weight: its weight in the total, >= 0; 0 leaves the term out.
        options: the loss's options as ``(name, value)`` pairs (a tuple, so the term hashes).
    """

    name: str
    weight: float = 1.0
    options: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        loss = LOSSES.get(self.name)
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise DasError(f"loss {self.name!r} weight={w!r} must be a finite number >= 0 (0 leaves the term out)")
        checked = loss.check_options(dict(self.options))
        object.__setattr__(self, "weight", float(w))
        object.__setattr__(self, "options", tuple(sorted(checked.items())))

    @property
    def loss(self) -> Loss:
        return LOSSES.get(self.name)

    def option(self, key: str) -> float:
        """The value of option ``key``: as given, else the loss's default."""
        options = dict(self.options)
        return options[key] if key in options else float(self.loss.defaults[key])

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        """The term's unweighted value on ``inputs``."""
        loss = self.loss
        tensors = []
        for need in loss.needs:
            value = inputs.get(need)
            if value is None:
                raise DasError(f"loss {self.name!r} needs {need}, which this step does not provide; drop the term or give it (a teacher?)")
            tensors.append(value)
        return loss(*tensors, **dict(self.options))


@dataclass(frozen=True)
class LossValues:
    """What a :class:`LossSpec` computes: the weighted total and each term's unweighted value."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


@dataclass(frozen=True)
class LossSpec:
    """A training objective: a weighted sum of registered losses.

    Build it from a :data:`LossConfig` mapping with :meth:`from_config` (what a YAML config
    gives), or from :class:`LossTerm` objects directly.

    Args:
        terms: the weighted losses, each name at most once.
    """

    terms: tuple[LossTerm, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "terms", tuple(self.terms))
        if not self.terms:
            raise DasError(f"the loss config has no terms; name at least one of {', '.join(LOSSES.names())}, e.g. {{'ce': 1.0}}")
        names = [t.name for t in self.terms]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise DasError(f"loss {dupes[0]!r} appears more than once in the loss config; give each loss once")

    @classmethod
    def from_config(cls, config: Mapping[str, float | Mapping[str, float]]) -> LossSpec:
        """Parse ``{name: weight}`` or ``{name: {"weight": w, **options}}`` (weight defaults to 1)."""
        if not isinstance(config, Mapping):
            raise DasError(f"the loss config must map loss names to weights or option mappings, got {config!r}")
        terms = []
        for name, value in config.items():
            LOSSES.get(name)  # an unknown name fails with the close matches before its value is read
            if isinstance(value, Mapping):
                options = dict(value)
                terms.append(LossTerm(name, options.pop("weight", 1.0), tuple(options.items())))
            else:
                terms.append(LossTerm(name, value))
        return cls(tuple(terms))

    def to_config(self) -> LossConfig:
        """The :data:`LossConfig` mapping that :meth:`from_config` rebuilds this spec from."""
        return {t.name: {"weight": t.weight, **dict(t.options)} if t.options else t.weight for t in self.terms}

    def term(self, name: str) -> LossTerm | None:
        """The term of loss ``name`` whatever its weight, or None when the spec has none."""
        return next((t for t in self.terms if t.name == name), None)

    @property
    def needs(self) -> frozenset[str]:
        """The :class:`LossInputs` fields the terms of non-zero weight read (e.g. to tap features only if needed)."""
        return frozenset(n for t in self.terms if t.weight > 0 for n in t.loss.needs)

    def __call__(self, inputs: LossInputs) -> LossValues:
        """The weighted total and each non-zero-weighted term's value on ``inputs``."""
        values = {t.name: t(inputs) for t in self.terms if t.weight > 0}
        weights = {t.name: t.weight for t in self.terms}
        if not values:
            reference = next((v for v in (inputs.get(n) for n in INPUT_NAMES) if v is not None), None)
            device = reference.device if reference is not None else None
            return LossValues(torch.zeros((), device=device), {})
        total = sum(weights[n] * v for n, v in values.items())
        return LossValues(total, values)
