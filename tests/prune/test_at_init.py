"""prune_at_init: every registered method, exact densities, deterministic ties, no empty layer,
SNIP against a hand computation, SynFlow data-free, and one-line errors for bad input."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from das.errors import DasError
from das.prune import SALIENCIES, SCOPES, density_report, exponential_schedule, prunable_weights, prune_at_init, saliency_scores
from das.prune.select import select
from tests.tinynets import TinyNet, batch

METHODS = SALIENCIES.names()

# Tiny nets on a loaded 2-core machine: one thread is several times faster (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def probe(n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [batch(8, seed=i) for i in range(n)]


def test_registry_has_the_five_methods() -> None:
    assert set(METHODS) == {"random", "magnitude", "snip", "synflow", "px"}
    assert SALIENCIES.get("px").rounds == 100 and SALIENCIES.get("synflow").rounds == 100
    assert SALIENCIES.get("snip").rounds == 1


@pytest.mark.parametrize("method", METHODS)
def test_every_method_scores_every_weight_and_leaves_the_model_alone(method: str) -> None:
    torch.manual_seed(0)
    model = TinyNet(width=6).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = saliency_scores(model, method, probe())
    weights = prunable_weights(model)
    assert list(scores) == list(weights)
    for name, s in scores.items():
        assert s.shape == weights[name].shape and torch.isfinite(s).all() and (s >= 0).all()
    masks = prune_at_init(model, method, 0.2, probe(), rounds=3)
    assert all(m.dtype == torch.bool for m in masks.values())
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_schedule_is_exponential() -> None:
    steps = exponential_schedule(0.01, 4)
    assert steps[-1] == pytest.approx(0.01)
    assert all(b / a == pytest.approx(0.01**0.25) for a, b in zip([1.0, *steps], steps))


@pytest.mark.parametrize(("method", "scope"), [("synflow", "global"), ("px", "global"), ("magnitude", "layer")])
def test_iterative_runs_reach_the_requested_density(method: str, scope: str) -> None:
    torch.manual_seed(0)
    model = TinyNet(width=32)  # 10 400 prunable weights: 0.1% of the density is resolvable
    total = sum(w.numel() for w in prunable_weights(model).values())
    for density in (0.1, 0.037):
        masks = prune_at_init(model, method, density, [batch(4)], rounds=5, scope=scope)
        kept = sum(int(m.sum()) for m in masks.values())
        assert kept == round(density * total)
        assert abs(kept / total - density) <= 1e-3 * density


def test_layer_scope_gives_each_layer_the_density() -> None:
    torch.manual_seed(0)
    model = TinyNet(width=16)
    for row in density_report(model, prune_at_init(model, "magnitude", 0.1, scope="layer", input_shape=(3, 8, 8)))[:-1]:
        assert abs(row["kept"] - 0.1 * row["total"]) <= 1


def test_ties_are_broken_by_position_and_the_count_is_exact() -> None:
    model = TinyNet(width=8)
    with torch.no_grad():
        for w in prunable_weights(model).values():
            w.fill_(0.5)  # every magnitude ties
    first = prune_at_init(model, "magnitude", 0.25, input_shape=(3, 8, 8))
    again = prune_at_init(model, "magnitude", 0.25, input_shape=(3, 8, 8))
    total = sum(m.numel() for m in first.values())
    assert sum(int(m.sum()) for m in first.values()) == round(0.25 * total)
    assert all(torch.equal(first[n], again[n]) for n in first)
    # the floor's pick per layer, then the earliest positions in named_modules() order
    flat = torch.cat([first[n].flatten() for n in first])
    assert flat[: round(0.25 * total) - len(first)].all()


def test_no_layer_is_ever_emptied() -> None:
    torch.manual_seed(0)
    model = TinyNet(width=8)
    with torch.no_grad():
        model.fc.weight.mul_(1e-6)  # a global magnitude ranking alone would cut the classifier entirely
    masks = prune_at_init(model, "magnitude", 0.05, input_shape=(3, 8, 8))
    assert int(masks["fc.weight"].sum()) == 1
    assert sum(int(m.sum()) for m in masks.values()) == round(0.05 * sum(m.numel() for m in masks.values()))


def test_a_round_keeps_a_subset_of_the_kept_weights() -> None:
    g = torch.Generator().manual_seed(0)
    alive = {"a": torch.rand(50, generator=g) < 0.5, "b": torch.rand(30, generator=g) < 0.5}
    scores = {n: torch.rand(m.shape, generator=g) for n, m in alive.items()}
    for scope in SCOPES:
        new = select(scores, alive, 0.2, scope)
        assert all(not (new[n] & ~alive[n]).any() and new[n].any() for n in alive)
        assert sum(int(m.sum()) for m in new.values()) == 16


def test_random_is_seeded() -> None:
    torch.manual_seed(0)
    model = TinyNet(width=8)
    a = prune_at_init(model, "random", 0.1, input_shape=(3, 8, 8), seed=1)
    b = prune_at_init(model, "random", 0.1, input_shape=(3, 8, 8), seed=1)
    c = prune_at_init(model, "random", 0.1, input_shape=(3, 8, 8), seed=2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


class Tiny(nn.Module):
    """conv → BN → ReLU → pool → linear: small enough to differentiate by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 1).flatten(1))


def test_snip_is_the_hand_computed_connection_sensitivity() -> None:
    torch.manual_seed(0)
    model = Tiny()
    batches = probe()
    scores = saliency_scores(model, "snip", batches)
    hand = copy.deepcopy(model).train()
    weights = [hand.conv.weight, hand.fc.weight]
    grads = [torch.zeros_like(w) for w in weights]
    for x, y in batches:
        for g, d in zip(grads, torch.autograd.grad(F.cross_entropy(hand(x), y), weights)):
            g += d
    expected = {"conv.weight": (grads[0] * weights[0]).abs(), "fc.weight": (grads[1] * weights[1]).abs()}
    for name in expected:
        torch.testing.assert_close(scores[name].float(), expected[name].detach(), rtol=1e-5, atol=1e-9)
    # and the mask keeps exactly the hand ranking's top k (the one-per-layer floor does not bind here)
    masks = prune_at_init(model, "snip", 0.3, batches)
    flat = torch.cat([expected[n].flatten() for n in expected])
    k = round(0.3 * flat.numel())
    top = torch.zeros_like(flat, dtype=torch.bool)
    top[flat.argsort(descending=True)[:k]] = True
    assert torch.equal(torch.cat([masks[n].flatten() for n in expected]), top)


def test_synflow_reads_no_data() -> None:
    torch.manual_seed(0)
    model = TinyNet(width=6)
    with_data = saliency_scores(model, "synflow", [batch(4, seed=5)])
    without = saliency_scores(model, "synflow", input_shape=(3, 8, 8))
    assert all(torch.equal(with_data[n], without[n]) for n in without)


@pytest.mark.parametrize("density", [0, 1, -0.1, 1.5, math.nan, math.inf, "0.1", None, True])
def test_bad_densities_fail_with_one_line(density: object) -> None:
    with pytest.raises(DasError) as info:
        prune_at_init(TinyNet(), "magnitude", density, input_shape=(3, 8, 8))  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and "strictly between 0 and 1" in message and repr(density) in message


def test_other_mistakes_fail_with_one_line() -> None:
    model = TinyNet()
    cases = [
        (lambda: prune_at_init(model, "pxx", 0.1, probe()), "did you mean 'px'"),
        (lambda: prune_at_init(model, "px", 0.1, probe(), scope="globl"), "did you mean 'global'"),
        (lambda: prune_at_init(model, "px", 0.1), "pass batches="),
        (lambda: prune_at_init(model, "snip", 0.1, [batch(4)[0]]), "needs labels"),
        (lambda: prune_at_init(model, "synflow", 0.1), "input_shape="),
        (lambda: prune_at_init(model, "magnitude", 0.1, probe(), rounds=0), "positive integer"),
        (lambda: prune_at_init(model, "magnitude", 1e-4, probe()), "fewer than one for each"),
        (lambda: prune_at_init(model, "px", 0.1, [batch(4)[1]]), "labels?"),
    ]
    for call, hint in cases:
        with pytest.raises(DasError) as info:
            call()
        assert "\n" not in str(info.value) and hint in str(info.value), str(info.value)
