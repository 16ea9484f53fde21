"""Sample-relation matrices of feature maps, shared by the DisWOT proxy and the ``relation`` loss.

Dong et al., "DisWOT: Student Architecture Search for Distillation WithOut Training" (CVPR
2023): a feature map's B×B relation matrix compares every pair of samples of a batch; a student
whose matrix is close to the teacher's relates the samples as the teacher does. The proxy
(:mod:`das.proxies.diswot`) ranks students by this distance at initialisation, and the loss
(:mod:`das.distill.losses`) trains it down, so both read the one definition here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["relation_matrix", "row_distance"]


def relation_matrix(feature_map: torch.Tensor) -> torch.Tensor:
    """B×B sample-relation matrix of a feature map, rows L2-normalised (zero rows stay zero).

    Computed in the input's dtype and differentiable, so the ``relation`` training loss uses it
    too; the proxy passes float64 maps.
    """
    flat = feature_map.reshape(feature_map.shape[0], -1)
    return F.normalize(flat @ flat.T, dim=1)


def row_distance(reference: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Squared distance of each row (last dimension); a zero row of ``candidate`` costs 4.

    A zero row has no direction, so its normalisation is undefined. The paper does not cover
    this case; das counts it at the largest distance two unit rows can have, 4, so a network
    that ignores its input ranks last (a zero row would otherwise cost only 1).
    """
    per_row = ((reference - candidate) ** 2).sum(dim=-1)
    dead = candidate.abs().sum(dim=-1) == 0
    return torch.where(dead, torch.full_like(per_row, 4.0), per_row)
