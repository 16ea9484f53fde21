"""``size_first``: the larger network first, with MeCo ordering networks of exactly equal size.

The search's default objective, chosen by the rule fixed in docs/decisions.md ("The default
without calibration") on the two populations whose students were distilled: no zero-cost score
picked better than size at every budget of both, and MeCo, the default before, lost to size by up
to 3.4 points on CIFAR ResNets. So size decides, and MeCo (:mod:`das.proxies.meco`) decides only
what size cannot: between networks with the same parameter count, which cell spaces have many of
(an NB201 cell's count depends only on how many of its edges are 1×1 and 3×3 convolutions).

    size_first = log(params) + TIE_WEIGHT · tanh(sign(meco) · log(1 + |meco|) / MECO_SCALE)

The MeCo term lies within ±TIE_WEIGHT, and two different counts n < m differ by
log(m) − log(n) ≥ log(1 + 1/n) > 2·TIE_WEIGHT for every n below 5·10⁹, so the term never
reorders networks of different sizes; float64 still resolves it (log(params) < 23, its spacing
about 4·10⁻¹⁵). Nothing is fitted and no accuracy enters it.
"""

from __future__ import annotations

import math

from das.proxies.base import register_proxy
from das.proxies.context import ScoringContext
from das.proxies.meco import meco
from das.stats import count_params

#: Bound of the tie-breaking term (see the module docstring for why it cannot reorder sizes).
TIE_WEIGHT = 1e-10
#: Signed-log MeCo values are divided by this before tanh, so typical scores (|meco| up to ~10⁴) stay off saturation.
MECO_SCALE = 10.0


def size_first_value(params: float, meco_score: float) -> float:
    """The score from a parameter count and a MeCo score (a non-finite MeCo breaks no tie: 0)."""
    tie = math.tanh(math.copysign(math.log1p(abs(meco_score)), meco_score) / MECO_SCALE) if math.isfinite(meco_score) else 0.0
    return math.log(max(params, 1.0)) + TIE_WEIGHT * tie


@register_proxy("size_first", needs={"meco"})
def size_first(ctx: ScoringContext) -> float:
    """log parameters, with MeCo breaking exact ties."""
    return size_first_value(float(count_params(ctx.model)), meco(ctx))
