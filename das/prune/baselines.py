"""The baseline saliencies PX is compared with: random, magnitude, SNIP and SynFlow.

- ``random``: uniform scores from the call's seeded generator (a random mask of the requested
  density; with a global ranking every layer keeps about the same fraction).
- ``magnitude``: ``|w|`` (Han et al., NeurIPS 2015, applied at initialisation).
- ``snip``: ``|g ⊙ w|`` with ``g = ∂L/∂w`` of the cross-entropy summed over the probe batches
  (Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019,
  eq. 6 at the all-ones mask), in train mode as their code runs it. One shot by default (the
  paper); ``rounds > 1`` gives iterative SNIP on the masked network. The gradients come from
  the proxies' shared labelled pass (:class:`das.proxies.ScoringContext`, ``batch_grads``).
- ``synflow``: ``|θ ⊙ ∂R/∂θ|`` with every parameter and buffer replaced by its absolute value,
  an all-ones input and ``R`` the sum of the outputs (Tanaka et al., "Pruning neural networks
  without any data by iteratively conserving synaptic flow", NeurIPS 2020, eq. 2), 100 rounds
  of the exponential schedule by default (their Algorithm 1). BatchNorm as in their code: eval
  mode, its statistics and affine parameters in absolute value. Computed in float64 by
  :func:`das.proxies.synflow.synflow_scores`; if that overflows, again with the input and the
  biases scaled by 2⁻⁵¹¹, which scales every score by the same factor and leaves the ranking.
"""

from __future__ import annotations

import torch

from das.errors import DasError
from das.proxies.context import ScoringContext
from das.proxies.synflow import _RESCUE, synflow_scores
from das.prune.registry import ScoringInputs, register_saliency
from das.nets.weights import prunable_weights


@register_saliency("random")
def random_scores(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    """Uniform scores, drawn on the CPU from the call's generator (the same on every device)."""
    return {n: torch.rand(m.shape, generator=inputs.generator, dtype=torch.float64).to(m.device) for n, m in inputs.masks.items()}


@register_saliency("magnitude")
def magnitude_scores(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    """|w|."""
    weights = prunable_weights(inputs.model)
    return {n: weights[n].detach().double().abs() for n in inputs.masks}


@register_saliency("snip", needs_labels=True)
def snip_scores(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    """|Σ_b ∂L_b/∂w ⊙ w| over the probe batches, on the masked network."""
    batches = [(x, y) for x, y in inputs.batches if y is not None]
    ctx = ScoringContext(inputs.model, batches, needs={"batch_grads"}, seed=inputs.seed)
    per_batch = ctx.batch_grads()
    names = [f"{name}.weight" if name else "weight" for name, _ in ctx.layers]
    weights = prunable_weights(inputs.model)
    out: dict[str, torch.Tensor] = {}
    for i, name in enumerate(names):
        if name in inputs.masks and name not in out:  # a tied weight counts once
            grad = sum(grads[i].double() for grads in per_batch)
            out[name] = (grad * weights[name].detach().double()).abs()
    return out


@register_saliency("synflow", rounds=100)
def synflow_pruning_scores(inputs: ScoringInputs) -> dict[str, torch.Tensor]:
    """|θ ⊙ ∂R/∂θ| with |θ| parameters and buffers, all-ones input, BatchNorm in eval mode."""
    scores = synflow_scores(inputs.model, inputs.input_shape, batchnorm="eval")
    if not all(torch.isfinite(s).all() for s in scores.values()):
        scores = synflow_scores(inputs.model, inputs.input_shape, _RESCUE, batchnorm="eval")
        if not all(torch.isfinite(s).all() for s in scores.values()):
            raise DasError(
                "synflow overflows float64 on this model even with its input rescaled by 2^-511; "
                "prune it with another method (px, snip, magnitude)"
            )
    return {n: scores[n] for n in inputs.masks}
