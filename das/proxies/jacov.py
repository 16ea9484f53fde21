"""``jacov``: how differently the network responds to each input (Jacobian covariance).

Mellor et al., "Neural Architecture Search without Training", arXiv v1 (2020), §3 (the score of
the first version of the paper, Spearman ρ .73 on NAS-Bench-201 CIFAR-10 in Abdelfattah et al.,
ICLR 2021). For the first probe batch of B images, J_i = ∂(Σ_k f_k(x_i))/∂x_i is the input
Jacobian of sample i (one backward of the summed logits, as the authors' code does; in train
mode BatchNorm couples the samples a little, as it does there), Σ_J the B×B correlation matrix
of the flattened J_i, λ its eigenvalues and k = 1e-5:

    jacov = −Σ_i [ log(λ_i + k) + 1/(λ_i + k) ]

Each term is largest at λ = 1 − k, so the score is highest when the Jacobians are uncorrelated.
The Jacobian backward runs on the graph of the shared labelled forward (no forward of its own).

A sample whose Jacobian is constant (e.g. all zero, for a network that ignores its input) has
no correlation; the authors' code then fails (NaN). das sets its row and column of Σ_J to 0,
which gives that sample eigenvalue 0, the worst possible term, so such networks rank last.
"""

from __future__ import annotations

from typing import Any

import torch

from das.proxies.base import register_proxy
from das.proxies.context import LabelledPass, ScoringContext, Tap, register_tap

_K = 1e-5


@register_tap("input_jacobian")
class InputJacobian(Tap):
    """∂(Σ logits)/∂x on the first probe batch, from the shared forward's graph."""

    autograd = True
    input_grad = True

    def after(self, labelled: LabelledPass) -> None:
        (grad,) = torch.autograd.grad(labelled.logits.sum(), labelled.x, retain_graph=True)
        self.jacobian = grad.detach()


def jacov_score(jacobian: torch.Tensor) -> float:
    """−Σ (log(λ + k) + 1/(λ + k)) over the eigenvalues λ of the per-sample correlation matrix."""
    corr = torch.corrcoef(jacobian.flatten(1).double())
    corr = torch.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)
    eig = torch.linalg.eigvalsh(corr)
    return float(-(torch.log(eig + _K) + 1.0 / (eig + _K)).sum())


@register_proxy("jacov", needs={"input_jacobian"})
def jacov(ctx: ScoringContext) -> float:
    """Eigenvalue score of the correlation of per-sample input Jacobians (Mellor et al. v1)."""
    tap: Any = ctx.tap("input_jacobian")
    return jacov_score(tap.jacobian)
