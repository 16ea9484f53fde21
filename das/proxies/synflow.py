"""``synflow``: synaptic flow, a data-free measure of how much signal the weights pass on.

Tanaka et al., "Pruning neural networks without any data by iteratively conserving synaptic
flow", NeurIPS 2020 (eq. 2 and Algorithm 1), as a NAS proxy in Abdelfattah et al., ICLR 2021
(Spearman ρ .74 on NAS-Bench-201 CIFAR-10). Every parameter is replaced by its absolute value,
the input is all ones (one sample of the probe shape), R = Σ of the outputs, and

    S = Σ |θ ⊙ ∂R/∂θ|   over the weights of every convolution and linear layer.

No probe data is read (``data_free``): the score does not depend on the batch.

BatchNorm: as in zero-cost-nas and NASLib (the code behind the published NAS-Bench-201
figure), every BatchNorm layer is bypassed (identity) in the SynFlow pass. (Tanaka et al.'s own
code instead evaluates in eval mode, which at initialisation — running mean 0, variance 1,
γ = 1, β = 0 — is the same map up to 1/√(1+ε).) The pass runs in eval mode on float64 absolute
copies of the parameters (``torch.func.functional_call``), so the model's weights are never
written and no signs need restoring.

Range: S grows like a product over the depth of the network: it overflows float32 on
conv-heavy NB201 cells and float64 past a few hundred layers. das computes in float64 and, if anything
overflows, again with the input and every bias scaled by α and R by β (α = β = 2⁻⁵¹¹): with
|θ| weights, ones input and BN bypassed, ReLU networks are linear on positive inputs, so the
scaled pass gives αβ·S exactly and log S is recovered. The score is reported as

    synflow = ln(1 + S)

a monotone transform of S (rankings are identical; NASLib likewise reports ln S), finite where
S itself would overflow, and 0 for a network whose output does not depend on its weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call

from das.errors import DasError
from das.proxies.base import register_proxy
from das.proxies.context import ScoringContext, prunable_layers
from das.proxies.state import batchnorm_forwards, eval_mode

_RESCUE = 2.0**-511


def synflow_sum(model: nn.Module, input_shape: tuple[int, ...], scale: float = 1.0) -> float:
    """S·scale² for the input and every bias scaled by ``scale`` and R by ``scale`` (module doc)."""
    return float(sum(s.sum() for s in synflow_scores(model, input_shape, scale).values()))


def synflow_scores(
    model: nn.Module, input_shape: tuple[int, ...], scale: float = 1.0, batchnorm: str = "bypass"
) -> dict[str, torch.Tensor]:
    """|θ ⊙ ∂R/∂θ| of every conv/linear weight (float64, keyed ``"<layer>.weight"``), scaled as in :func:`synflow_sum`.

    The proxy sums these; the SynFlow pruner (:mod:`das.prune`) ranks them. The pass reads
    float64 copies of the parameters through ``torch.func.functional_call``, so the model's own
    tensors are never written, and puts the model in eval mode only for the duration of the call.

    Args:
        batchnorm: ``"bypass"`` makes every BatchNorm an identity (the proxy, as zero-cost-nas);
            ``"eval"`` keeps them in eval mode with every floating buffer replaced by its
            absolute value too (Tanaka et al.'s pruning code, which ``abs_()``es the whole
            state dict); their running means then scale with ``scale`` like the biases, so the
            pass stays homogeneous in it.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    layer_weights = {f"{name}.weight" for name, _ in prunable_layers(model)}
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            value = p.detach().double().abs()
            if name.rpartition(".")[2] == "bias":
                value = value * scale
            tensors[name] = value.requires_grad_(name in layer_weights)
        for name, b in model.named_buffers():
            if not b.is_floating_point():
                tensors[name] = b
            elif batchnorm == "eval":
                tensors[name] = b.double().abs() * (scale if name.rpartition(".")[2] == "running_mean" else 1.0)
            else:
                tensors[name] = b.double()
    names = [name for name in sorted(layer_weights) if name in tensors]  # tied weights appear once
    weights = [tensors[name] for name in names]
    x = torch.full((1, *input_shape), scale, dtype=torch.float64, device=device)
    norms = _bypassed_batchnorm(model) if batchnorm == "bypass" else eval_mode(model)
    with norms, torch.enable_grad():
        r = functional_call(model, tensors, (x,)).sum() * scale
        grads = torch.autograd.grad(r, weights, allow_unused=True) if r.requires_grad else [None] * len(weights)
    return {
        name: (w.detach() * g).abs() if g is not None else torch.zeros_like(w.detach())
        for name, w, g in zip(names, weights, grads)
    }


@contextmanager
def _bypassed_batchnorm(model: nn.Module) -> Iterator[None]:
    """Eval mode with every BatchNorm an identity, undone on exit."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with batchnorm_forwards(model, lambda _m: _identity):
            yield
    finally:
        for m, training in modes.items():
            m.training = training


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def log1p_synflow(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """ln(1 + S), rescaling when float64 overflows."""
    s = synflow_sum(model, input_shape)
    if math.isfinite(s):
        return math.log1p(s)
    scaled = synflow_sum(model, input_shape, _RESCUE)
    if not math.isfinite(scaled):
        raise DasError(
            "synflow overflows float64 on this model even with its input rescaled by 2^-511; "
            "the network is too deep for SynFlow (drop synflow from the proxies)"
        )
    if scaled == 0.0:
        return 0.0
    log_s = math.log(scaled) - 2 * math.log(_RESCUE)
    return log_s + math.log1p(math.exp(-log_s))  # ln(1 + S) = softplus(ln S)


@register_proxy("synflow", needs={"data_free"})
def synflow(ctx: ScoringContext) -> float:
    """ln(1 + Σ |θ ⊙ ∂R/∂θ|) with |θ| weights, all-ones input and BatchNorm bypassed."""
    return ctx.memo("synflow", lambda: log1p_synflow(ctx.model, ctx.input_shape))
