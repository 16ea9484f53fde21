"""``nwot``: NASWOT, how differently the activations partition the probe images.

Mellor et al., "Neural Architecture Search without Training", ICML 2021 (eq. 2; Spearman ρ .77
on NAS-Bench-201 CIFAR-10 in NAS-Bench-Suite-Zero). Every activation turns its input into a
binary code per image (1 where the pre-activation is positive, i.e. where a ReLU unit is
active). With c_i the concatenated codes of image i over the activation's N_A units and d_H the
Hamming distance, the kernel is

    K_ij = Σ_activations (N_A − d_H(c_i, c_j)) = Σ_activations [c cᵀ + (1 − c)(1 − c)ᵀ]_ij

and the score is ``log |det K|``. Images that the network cannot tell apart make K close to
singular.

The authors' code hooks ``nn.ReLU`` modules; das sums over every activation the forward applies,
module or function (``nn.ReLU``, ``F.relu``, in place or not, and GELU, SiLU, Hardswish, ...:
the list and the sign-of-pre-activation pattern of non-ReLU activations are in
:mod:`das.proxies.activations`). On a network of ``nn.ReLU`` modules (NAS-Bench-201) this is the
authors' kernel, bit for bit the value das gave before; a network that calls ``F.relu`` (das's
CIFAR ResNets) no longer scores 0, and one that applies no recognised activation is refused
with a DasError.

K is built during the shared labelled forward (one B×B product per activation input). Its
entries are integers, so a non-singular K has det ≥ 1 and log det ≥ 0; a singular K (two
probe images with identical codes in every activation, e.g. a network that ignores its input,
or a batch with a repeated image) has log det = −∞ in the authors' code, and das scores it 0,
the floor of every non-singular kernel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from das.proxies.activations import SeenInputs, codes, no_activation_error
from das.proxies.base import register_proxy
from das.proxies.context import ScoringContext, Tap, register_tap


@register_tap("relu_kernel")  # the need keeps its first name; it reads every activation, not only ReLUs
class ActivationKernel(Tap):
    """K = Σ over activation calls of c cᵀ + (1−c)(1−c)ᵀ, c the binary codes of the activation input."""

    activations = True

    def install(self, model: nn.Module, x: torch.Tensor) -> list[Any]:
        self.kernel = torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device)
        self.calls = 0
        self._seen = SeenInputs()
        return []

    def on_activation(self, pre: torch.Tensor) -> None:
        self.calls += 1
        term = self._seen.get(pre)
        if term is None:
            c = codes(pre).float()
            units = c.shape[1]
            # Σ_f (1−c_if)(1−c_jf) = N − s_i − s_j + (c cᵀ)_ij, so one product per input suffices;
            # its entries are integer counts below 2**24, exact in float32.
            same_on = (c @ c.T).double()
            active = c.sum(1).double()
            term = 2 * same_on + units - active[:, None] - active[None, :]
            self._seen.add(pre, term)
        self.kernel += term

    def close(self) -> None:
        self._seen.clear()


def log_det(kernel: torch.Tensor) -> float:
    """log det of an integer PSD kernel; 0 (the floor of a non-singular one) when singular."""
    sign, value = torch.linalg.slogdet(kernel)
    if sign <= 0 or not torch.isfinite(value):
        return 0.0
    return max(float(value), 0.0)


@register_proxy("nwot", needs={"relu_kernel"})
def nwot(ctx: ScoringContext) -> float:
    """log |det K| of the binary activation-code kernel of the first probe batch."""
    tap: Any = ctx.tap("relu_kernel")
    if not tap.calls:
        raise no_activation_error("nwot", ctx.model)
    return log_det(tap.kernel)
