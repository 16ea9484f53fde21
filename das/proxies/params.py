"""``params``: the number of trainable parameters.

A size baseline every zero-cost study reports (Abdelfattah et al., "Zero-Cost Proxies for
Lightweight NAS", ICLR 2021, Table 1: Spearman ρ .72 on NAS-Bench-201 CIFAR-10), and a hard
baseline to beat. Counted by :func:`das.stats.count_params`, the same count a search's budget
uses; it reads only the model.
"""

from __future__ import annotations

from das.proxies.base import register_proxy
from das.proxies.context import ScoringContext
from das.stats import count_params


@register_proxy("params")
def params(ctx: ScoringContext) -> float:
    """Trainable parameters (more is better, as the benchmarks' correlations assume)."""
    return float(count_params(ctx.model))
