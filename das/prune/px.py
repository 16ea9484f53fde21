"""``px``: Path eXclusion, pruning at initialisation from a data-dependent bound on the NTK trace.

Iurada, Ciccone, Tommasi, "Finding Lottery Tickets in Vision Models via Data-driven Spectral
Foresight Pruning", CVPR 2024 (code: github.com/iurada/px-ntk-pruning, ``lib/pruners.py``).

Write a ReLU network as a sum over its paths ``p`` from an input unit to an output unit: each
path carries a value, the product of the weights along it, and is open for an input ``x`` when
every unit on it is active. The NTK then factors into a data-free *path kernel* (the Jacobian
of the path values with respect to the weights) and a *data term* (which paths the inputs
open, and how much input they carry). PX scores a weight by its share of the paper's upper
bound of the NTK trace built from these two factors, computed as the authors' code does with
two auxiliary networks (here: two passes with substituted tensors; the model is never written):

    z₁(x) = f(x ⊙ x ; kept weights 1, pruned 0, each activation replaced by the gate
              1[pre-activation > 0] of the real network on x)                (data term, no grad)
    z₂(ψ) = f(1 ; weights ψ = θ² ⊙ mask, every activation the identity)      (path kernel)
    R     = Σ_b Σ_{i ∈ b} ⟨ z₁(x_i), z₂(ψ) ⟩      summed over the outputs and the probe images
    S_j   = θ_j² · |∂R/∂ψ_j|                     (= ψ_j |∂R/∂ψ_j| for a kept weight)

The classifier is the exception, as in the authors' code: it keeps its real (signed, masked)
weights in both passes, so z₁ weighs the outputs by the real classifier's read-out of the data
term (with an all-ones classifier z₁ would be one number shared by every class, and the gates
would drop out of the first round's ranking); its score is θ² |∂R/∂θ|.
The scores are non-negative (the absolute value above; without the signed classifier every
factor would be non-negative already) and depend on the data through z₁ and through the
BatchNorm scales below, unlike SynFlow's. The pruner applies PX over 100 rounds of the
exponential schedule (the authors' launch scripts), re-reading the masked network every round.

Conventions where the path view meets real layers:

- BatchNorm (any ``_BatchNorm``) is the per-channel linear map it applies in training: scale
  ``s = γ/√(σ²_B + ε)`` with σ²_B the batch variance of its input in the real masked network on
  the probe batch, shift dropped. Like any weight, ``s`` enters the path kernel squared and the
  data term as one. Measured why: with BatchNorm frozen at its eval-mode map instead (the
  identity at initialisation), ResNet-20's third stage collapsed to the one-weight floor at 2%
  density, because a pruned residual branch loses to its shortcut in the path kernel; with the
  batch scales, which rescale a thinned branch as training's BatchNorm does, every layer kept
  130 to 820 weights (two batches of 16 16×16 images, 30 rounds).
- The real network runs in train mode (the forward that gives the gates and the BatchNorm
  scales: the network as training sees it), under a fixed seed; the two auxiliary passes run in
  eval mode (no dropout).
- Biases are zero in both auxiliary passes: the bound counts paths that start at an input unit.
- Every other parameter outside BatchNorm is a path weight: squared in the path kernel, one in
  the data term.
- Activations are all those das recognises (:mod:`das.proxies.activations`), as module or
  function, in place or not; the gate is the sign of the pre-activation (ReLU's definition; for
  other rectifiers the side of their kink).
- The classifier is the model's ``logits`` feature point (:mod:`das.features`), else its last
  ``nn.Linear``.

Deliberate differences from the authors' code (``lib/pruners.py`` at ed6c40e, their latest; the
CVPR-era commits computed other variants, e.g. 82ce2bf scored |g·θ²·θ·θ²| with real weights in the
data copy, 0d01d27 summed squared gradients per batch):

1. BatchNorm: their auxiliary copies run in train mode, so BatchNorm normalises with the batch
   statistics of the auxiliary pass itself (of the all-ones batch in the path-kernel copy, where
   a BatchNorm1d sees zero variance and passes on β plus rounding noise — on a small MLP their
   scores came out as float32 noise of order 1e-7; of x² pushed through all-ones weights in the
   data copy), which is neither linear nor the normalisation the real network applies. They also recognise BatchNorm by name (parameters
   containing ``bn`` are left alone), so one named otherwise (a shortcut's ``shortcut.1``) has its
   affine parameters and running buffers squared / set to one. das uses the linear map with the
   real network's batch scales above, for every ``_BatchNorm`` by type.
2. Gates: their activation copy runs in eval mode; das reads the gates from the same train-mode
   forward that gives the BatchNorm scales (at initialisation eval-mode BatchNorm is the identity,
   so eval gates ignore how BatchNorm rescales a pruned layer).
3. Classifier: they recognise it by name (parameters containing ``fc``, bias included, kept
   real); das by the feature contract, and zeroes its bias like every other.
4. Biases: they square biases in the path-kernel copy and set them to one in the data copy;
   das sets them to zero in both.
5. Activations: they monkey-patch ``F.relu`` and ``F.leaky_relu`` (functions only, so a
   network of ``nn.ReLU`` modules would keep its ReLUs); das rewires every recognised activation.
6. Data: they draw a class-balanced subset of the training set (``examples_per_class``) for
   CIFAR/Tiny-ImageNet, ``batch_limit`` batches otherwise; das uses the probe batches given.
7. The path-kernel pass runs on one all-ones input per probe batch, not a batch of ones: with
   BatchNorm linear every row of theirs would be the same.
8. Precision: they compute in float32; das in float64, and if that overflows (the data term
   grows like the product of the fan-ins) again with the input scaled by 2⁻⁵¹¹. With biases zero,
   BatchNorm linear and the gates fixed, z₁ is linear in its input, so every score scales by the
   same factor and the ranking is unchanged.
9. Modes: their auxiliary copies run in train mode (dropout on, if the model has any); das runs
   them in eval mode.
10. Thresholding (in :mod:`das.prune.select`, shared by every method): they prune ``score ≤
    k-th value`` globally, so ties at the threshold are all pruned (the density can undershoot),
    and their ``local`` scope rounds each layer down; das keeps exactly ``round(d·N)`` weights,
    ties broken by position, ranks only weights still kept, and keeps at least one per layer.

Shared limitation: max pooling runs unchanged in both auxiliary passes (it picks the largest
auxiliary value, not the unit the real network picked), as in the authors' code; other
normalisations (LayerNorm, GroupNorm) also run unchanged, so the path view is exact only for
conv/linear/BatchNorm/rectifier networks — those of the paper and of das's CIFAR models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm
from torch.overrides import TorchFunctionMode

from das.errors import DasError
from das.features import feature_points, logits_point
from das.proxies.activations import _FUNCTIONS, counted_call, watch_activations
from das.proxies.context import seeded
from das.proxies.state import batchnorm_forwards, eval_mode, train_mode
from das.prune.registry import ScoringInputs, register_saliency
from das.nets.weights import prunable_weights

#: The data-term rescue: the pass is linear in its input, so scaling it rescales every score alike.
_RESCUE = 2.0**-511

#: In-place forms of the recognised activations (``F.relu_``, ``torch.relu_``, ``Tensor.relu_``...).
_INPLACE = frozenset(f for f in _FUNCTIONS if getattr(f, "__name__", "").endswith("_"))


@register_saliency("px", needs_data=True, rounds=100)
def px_scores(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    """θ² · |∂R/∂θ²| for every kept weight (module doc), from the inputs of the probe batches."""
    xs = [x for x, _ in inputs.batches]
    keep_real = {classifier_weight(inputs.model, xs[0])} & set(inputs.masks)
    grads = _bound_gradients(inputs.model, inputs.masks, xs, inputs.input_shape, keep_real, inputs.seed, 1.0)
    if not all(torch.isfinite(g).all() for g in grads.values()):
        grads = _bound_gradients(inputs.model, inputs.masks, xs, inputs.input_shape, keep_real, inputs.seed, _RESCUE)
        if not all(torch.isfinite(g).all() for g in grads.values()):
            raise DasError(
                f"px overflows float64 on {type(inputs.model).__name__} even with its input scaled by 2^-511; "
                "prune this network with another method (snip, magnitude)"
            )
    weights = prunable_weights(inputs.model)
    return {name: weights[name].detach().double().square() * grads[name].abs() for name in inputs.masks}


def classifier_weight(model: nn.Module, x: torch.Tensor) -> str:
    """The classifier's weight name: the model's logits feature point, else its last nn.Linear."""
    try:
        name = logits_point(feature_points(model, x)).module
    except DasError:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            return ""
        name = linears[-1]
    return f"{name}.weight"


@dataclass
class Observed:
    """What the real network does on one batch: its activation patterns and BatchNorm scales."""

    patterns: list[torch.Tensor]
    scales: dict[nn.Module, torch.Tensor]


def observe(model: nn.Module, x: torch.Tensor, seed: int = 0) -> Observed:
    """One train-mode forward of the real (masked) network on ``x``, as training would run it.

    Records the pattern ``pre-activation > 0`` of every activation call, in call order, and the
    scale ``γ/√(σ²_B + ε)`` every BatchNorm applies with the batch statistics of its input.
    """
    patterns: list[torch.Tensor] = []
    scales: dict[nn.Module, torch.Tensor] = {}

    def on_norm(m: nn.Module, args: tuple) -> None:
        t = args[0].detach().double()
        var = t.transpose(0, 1).flatten(1).var(dim=1, unbiased=False)
        gamma = m.weight.detach().double() if m.weight is not None else torch.ones_like(var)
        scales[m] = gamma / torch.sqrt(var + m.eps)

    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    hooks = [m.register_forward_pre_hook(on_norm) for m in norms]
    try:
        with train_mode(model), torch.no_grad(), seeded(seed, x.device), watch_activations([lambda pre: patterns.append(pre.detach() > 0)]):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return Observed(patterns, scales)


def _bound_gradients(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    xs: Sequence[torch.Tensor],
    input_shape: tuple[int, ...],
    keep_real: set[str],
    seed: int,
    scale: float,
) -> dict[str, torch.Tensor]:
    """Σ_b ∂R_b/∂W_eff for every masked weight (W_eff = ψ for path weights, θ ⊙ mask for the classifier)."""
    data_tensors, _ = _substituted(model, masks, keep_real, data=True)
    kernel_tensors, leaves = _substituted(model, masks, keep_real, data=False)
    total = {name: torch.zeros_like(t) for name, t in leaves.items()}
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=xs[0].device)
    for b, x in enumerate(xs):
        seen = observe(model, x, seed + b)
        gates = _Replay(seen.patterns, model)
        with eval_mode(model), _linear_batchnorm(model, None), _Rewired(gates), torch.no_grad():
            z1 = _output(functional_call(model, data_tensors, (x.detach().double().square() * scale,)), model).sum(0)
        gates.done()
        squared = {m: s.square() for m, s in seen.scales.items()}
        with eval_mode(model), _linear_batchnorm(model, squared), _Rewired(_linear), torch.enable_grad():
            z2 = _output(functional_call(model, kernel_tensors, (ones,)), model)[0]
            if z2.shape != z1.shape:
                raise DasError(
                    f"px: {type(model).__name__} gives outputs of shape {tuple(z2.shape)} on one all-ones input "
                    f"but {tuple(z1.shape)} per probe image; PX needs one output shape"
                )
            r = (z1 * z2).sum()
            names = list(leaves)
            grads = torch.autograd.grad(r, [leaves[n] for n in names], allow_unused=True) if r.requires_grad else [None] * len(names)
        for name, g in zip(names, grads):
            if g is not None:
                total[name] += g
    return total


def _substituted(
    model: nn.Module, masks: Mapping[str, torch.Tensor], keep_real: set[str], data: bool
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The float64 tensors of one auxiliary pass, and (path kernel) the leaves to differentiate.

    Data term: kept weights 1, pruned 0, other path weights 1. Path kernel: θ² ⊙ mask (leaves),
    other path weights squared. The classifier (``keep_real``) keeps θ ⊙ mask in both. Biases 0
    in both; BatchNorm's own tensors are left out (its forward is replaced).
    """
    norm_params = {id(p) for m in model.modules() if isinstance(m, _BatchNorm) for p in m.parameters(recurse=False)}
    norm_buffers = {id(b) for m in model.modules() if isinstance(m, _BatchNorm) for b in m.buffers(recurse=False)}
    tensors: dict[str, torch.Tensor] = {}
    leaves: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if id(p) in norm_params:
                continue
            value = p.detach().double()
            if name.rpartition(".")[2] == "bias":
                tensors[name] = torch.zeros_like(value)
            elif name in masks:
                mask = masks[name].to(device=value.device, dtype=torch.float64)
                if name in keep_real:
                    tensors[name] = value * mask
                elif data:
                    tensors[name] = mask
                else:
                    tensors[name] = value.square() * mask
                if not data:
                    leaves[name] = tensors[name] = tensors[name].requires_grad_(True)
            else:
                tensors[name] = torch.ones_like(value) if data else value.square()
        for name, b in model.named_buffers():
            if id(b) not in norm_buffers and b.is_floating_point():
                tensors[name] = b.double()
    missing = [name for name in masks if name not in tensors]
    if missing:
        raise DasError(f"px: masked weights {missing} are not parameters of {type(model).__name__} (remove applied masks before pruning again)")
    return tensors, leaves


def _output(out: Any, model: nn.Module) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise DasError(f"px needs a model that returns one tensor; {type(model).__name__} returned a {type(out).__name__}")
    return out


# --------------------------------------------------------------------------- rewiring the forward


class _Rewired(TorchFunctionMode):
    """Replaces every recognised activation call by ``rewire(pre, inplace)`` (the same calls
    :class:`das.proxies.activations.ActivationWatch` reports, so patterns and gates line up)."""

    def __init__(self, rewire: Callable[[torch.Tensor, bool], torch.Tensor]) -> None:
        super().__init__()
        self.rewire = rewire

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        call = counted_call(func, args, kwargs)
        if call is not None:
            name, pre = call
            return self.rewire(pre, _is_inplace(func, name, args, kwargs))
        return func(*args, **kwargs)


def _is_inplace(func: Any, name: str, args: tuple, kwargs: dict) -> bool:
    if func in _INPLACE or kwargs.get("inplace") is True:
        return True
    if name == "rrelu":  # rrelu(input, lower, upper, training, inplace): a positional True may be `training`
        return len(args) > 4 and args[4] is True
    return any(a is True for a in args[1:])


def _linear(pre: torch.Tensor, inplace: bool) -> torch.Tensor:
    """The path kernel's activation: the identity."""
    return pre


class _Replay:
    """The data term's activation: the recorded gates of the real network, one per call, in order."""

    def __init__(self, patterns: list[torch.Tensor], model: nn.Module) -> None:
        self.patterns = patterns
        self.next = 0
        self.model = model

    def __call__(self, pre: torch.Tensor, inplace: bool) -> torch.Tensor:
        if self.next >= len(self.patterns) or self.patterns[self.next].shape != pre.shape:
            raise self._mismatch()
        gate = self.patterns[self.next].to(pre.dtype)
        self.next += 1
        return pre.mul_(gate) if inplace else pre * gate

    def done(self) -> None:
        if self.next != len(self.patterns):
            raise self._mismatch()

    def _mismatch(self) -> DasError:
        return DasError(
            f"px replays the activation patterns of {type(self.model).__name__} in call order, but its forward applied "
            "different activations in two passes on the same input (data-dependent control flow?); prune it with snip or magnitude"
        )


@contextmanager
def _linear_batchnorm(model: nn.Module, scales: Mapping[nn.Module, torch.Tensor] | None) -> Iterator[None]:
    """Every BatchNorm as ``x ↦ scales[m] ⊙ x`` per channel, or the identity (``None``), undone on exit."""
    with batchnorm_forwards(model, lambda m: _scaled(scales[m]) if scales is not None and m in scales else _identity):
        yield


def _scaled(scale: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        return x * scale.view(1, -1, *([1] * (x.dim() - 2))).to(x.dtype)

    return forward


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x
