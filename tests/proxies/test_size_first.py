"""size_first: size decides, MeCo orders only networks of exactly equal size."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from das.proxies import score
from das.proxies.size_first import TIE_WEIGHT, size_first_value
from das.spaces import create_space


@pytest.mark.parametrize("n", [10, 20_000, 1_000_000, 4_999_999_999])
def test_the_tie_break_never_reorders_different_sizes(n):
    assert size_first_value(n + 1, -1e9) > size_first_value(n, 1e9)


def test_equal_sizes_are_ordered_by_meco_and_a_failed_meco_breaks_no_tie():
    assert size_first_value(5000, 3.0) > size_first_value(5000, 2.0) > size_first_value(5000, -2.0)
    assert size_first_value(5000, math.nan) == pytest.approx(math.log(5000))
    assert abs(size_first_value(5000, 1e30) - math.log(5000)) <= TIE_WEIGHT * (1 + 1e-6)  # float rounding of the sum


def test_scored_networks_rank_lexicographically_by_params_then_meco():
    space = create_space("nb201", C=4, N=1)
    specs = list(itertools.islice(space.enumerate(), 0, 400, 25))
    batch = (torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 10)
    rows = []
    for spec in specs:
        torch.manual_seed(0)
        s = score(spec.build(10), [batch], ["size_first", "params", "meco"])
        rows.append((s["params"], s["meco"], s["size_first"]))
    by_value = sorted(rows, key=lambda r: r[2])
    by_lexicon = sorted(rows, key=lambda r: (r[0], r[1]))
    assert by_value == by_lexicon
    assert len({r[0] for r in rows}) < len(rows)  # some sizes tie, so MeCo did decide something
