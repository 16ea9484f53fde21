"""The ``ensemble`` proxy: AZ-NAS's Σ log(rank/m) against a fixed reference population."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from das.errors import DasError
from das.proxies import ENSEMBLE_MEMBERS, EnsembleReference, score
from das.report.ranking import log_rank_ensemble
from tests.tinynets import TinyNet, batch

MEMBERS = ("a", "b")


def ref(a: list[float], b: list[float]) -> EnsembleReference:
    return EnsembleReference.from_population([{"a": x, "b": y} for x, y in zip(a, b)], members=MEMBERS)


def test_rank_counts_ties_as_half_and_interpolates_gaps() -> None:
    r = ref([1.0, 2.0, 4.0], [0.0, 0.0, 0.0])
    assert r.rank("a", 2.0) == 1 + 1.5  # one below, itself half: the average rank among 4
    assert r.rank("a", 3.0) == 1 + 2.0  # halfway between 2 (position 1.5) and 4 (position 2.5)
    assert r.rank("a", 2.5) == pytest.approx(1 + 1.75)
    assert r.rank("a", -5.0) == 1.0 and r.rank("a", 99.0) == 4.0  # clamped beyond the reference
    assert r.rank("a", math.nan) == 1.0  # a failed score ranks last
    assert r.rank("b", 0.0) == 1 + 1.5  # all equal: the middle


def test_a_clone_of_a_reference_member_scores_as_in_the_pooled_ranking() -> None:
    rng = np.random.default_rng(0)
    population = [{"a": float(x), "b": float(y)} for x, y in rng.normal(size=(9, 2))]
    r = EnsembleReference.from_population(population, members=MEMBERS)
    for member in population:
        pooled = log_rank_ensemble([*population, member], MEMBERS)[-1]
        assert r.value(member) == pytest.approx(pooled)


def test_better_member_scores_never_lower_the_ensemble() -> None:
    rng = np.random.default_rng(1)
    r = ref(list(rng.normal(size=20)), list(rng.normal(size=20)))
    grid = np.linspace(-3, 3, 200)
    values = [r.value({"a": float(x), "b": 0.1}) for x in grid]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert r.value({"a": 9.0, "b": 9.0}) == 0.0  # best under every member


def test_reference_round_trips_through_json(tmp_path) -> None:
    r = ref([1.0, 3.0, 2.0], [5.0, 4.0, 6.0])
    r.save(tmp_path / "ref.json")
    back = EnsembleReference.load(tmp_path / "ref.json")
    assert back.members == r.members and all(np.array_equal(back.scores[k], r.scores[k]) for k in MEMBERS)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DasError, match="bad.json"):
        EnsembleReference.load(tmp_path / "bad.json")


def test_reference_needs_two_finite_scores_per_member() -> None:
    with pytest.raises(DasError, match="'b' has 1 finite"):
        ref([1.0, 2.0], [math.nan, 3.0])


def test_ensemble_proxy_is_the_reference_value_of_its_members() -> None:
    probe = [batch(16, seed=0), batch(16, seed=1)]
    population = []
    for i, width in enumerate((3, 5, 8)):
        torch.manual_seed(i)
        population.append(score(TinyNet(width=width, stages=True), probe, list(ENSEMBLE_MEMBERS)))
    r = EnsembleReference.from_population(population)
    torch.manual_seed(9)
    model = TinyNet(width=6, stages=True)
    got = score(model, probe, ["ensemble", *ENSEMBLE_MEMBERS], reference=r)
    assert got["ensemble"] == pytest.approx(r.value(got))
    assert got["ensemble"] <= 0.0
    with pytest.raises(DasError, match="reference population"):
        score(model, probe, ["ensemble"])
    wrong = EnsembleReference.from_population([{"snip": 1.0}, {"snip": 2.0}], members=("snip",))
    with pytest.raises(DasError, match="members"):
        score(model, probe, ["ensemble"], reference=wrong)
