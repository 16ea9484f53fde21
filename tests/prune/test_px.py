"""PX against a hand computation of the authors' formula, and the properties that define it.

The hand computation writes the two auxiliary networks out as matrix products on a small MLP
(no call into das.prune.px). Without BatchNorm this is exactly what the authors' code
(iurada/px-ntk-pruning, lib/pruners.py at ed6c40e) computes for such a net with its classifier
named ``fc`` (checked against their implementation to 1e-16 while writing das's); with
BatchNorm it is das's documented convention (its scale from the real batch statistics).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from das.prune import density_report, prune_at_init, saliency_scores
from teachers.cifar_resnet import resnet20
from tests.tinynets import TinyNet, batch

# Tiny nets on a loaded 2-core machine: one thread is several times faster (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


class MLP(nn.Module):
    """x → l1 → [BatchNorm] → ReLU → l2 → ReLU → fc, no biases."""

    def __init__(self, norm: bool, relu: type[nn.Module] | None = None) -> None:
        super().__init__()
        self.l1 = nn.Linear(5, 4, bias=False)
        self.bn = nn.BatchNorm1d(4) if norm else nn.Identity()
        self.l2 = nn.Linear(4, 3, bias=False)
        self.fc = nn.Linear(3, 2, bias=False)
        self.act = relu() if relu is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.act if self.act is not None else F.relu
        return self.fc(act(self.l2(act(self.bn(self.l1(x))))))


def _mlp(norm: bool) -> MLP:
    torch.manual_seed(3)
    model = MLP(norm).double()
    if norm:
        with torch.no_grad():  # a non-trivial BatchNorm: signed γ, a shift that moves the gates
            model.bn.weight.copy_(torch.tensor([1.5, -0.7, 0.4, 2.0], dtype=torch.float64))
            model.bn.bias.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=torch.float64))
    return model


def _hand_px(model: MLP, xs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """θ² |∂R/∂θ²| (θ² |∂R/∂θ| for the classifier) by explicit algebra, summed over the batches."""
    w1, w2, w3 = (m.weight.detach() for m in (model.l1, model.l2, model.fc))
    g1, g2, g3 = torch.zeros_like(w1), torch.zeros_like(w2), torch.zeros_like(w3)
    for x in xs:
        u = x @ w1.T  # real network, train mode
        if isinstance(model.bn, nn.BatchNorm1d):
            var = u.var(0, unbiased=False)
            s = model.bn.weight.detach() / torch.sqrt(var + model.bn.eps)
            v = (u - u.mean(0)) * s + model.bn.bias.detach()
        else:
            s, v = torch.ones(4, dtype=x.dtype), u
        a1 = v > 0
        a2 = (torch.relu(v) @ w2.T) > 0
        # data term: weights one (the classifier real), input x², gates of the real network
        h1 = a1 * (x.square() @ torch.ones(5, 4, dtype=x.dtype))
        h2 = a2 * (h1 @ torch.ones(4, 3, dtype=x.dtype))
        z1 = (h2 @ w3.T).sum(0)
        # path kernel: squared weights, BatchNorm scale squared, activations linear, input ones
        q1 = s.square() * (w1.square() @ torch.ones(5, dtype=x.dtype))
        q2 = w2.square() @ q1
        back = w3.T @ z1  # ∂R/∂q2
        g3 += torch.outer(z1, q2)
        g2 += torch.outer(back, q1)
        g1 += torch.outer(s.square() * (w2.square().T @ back), torch.ones(5, dtype=x.dtype))
    return {"l1.weight": w1.square() * g1.abs(), "l2.weight": w2.square() * g2.abs(), "fc.weight": w3.square() * g3.abs()}


@pytest.mark.parametrize("norm", [False, True], ids=["authors-formula", "batchnorm"])
def test_px_matches_a_hand_computation(norm: bool) -> None:
    model = _mlp(norm)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(2)]
    expected = _hand_px(model, xs)
    got = saliency_scores(model, "px", [(x, None) for x in xs])
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-10, atol=0.0)


def test_modules_and_in_place_activations_give_the_same_scores() -> None:
    xs = [(torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64), None)]
    functional = saliency_scores(_mlp(True), "px", xs)
    for relu in (nn.ReLU, lambda: nn.ReLU(inplace=True)):
        model = _mlp(True)
        model.act = relu()
        scores = saliency_scores(model, "px", xs)
        for name in functional:
            torch.testing.assert_close(scores[name], functional[name], rtol=1e-12, atol=0.0)


def test_px_is_non_negative_and_reads_the_data_unlike_synflow() -> None:
    torch.manual_seed(0)
    model = TinyNet(width=6)
    first, second = [batch(8, seed=1)], [batch(8, seed=2)]
    a, b = saliency_scores(model, "px", first), saliency_scores(model, "px", second)
    assert all((s >= 0).all() and torch.isfinite(s).all() for s in (*a.values(), *b.values()))
    flat_a, flat_b = torch.cat([s.flatten() for s in a.values()]), torch.cat([s.flatten() for s in b.values()])
    ranks_a, ranks_b = flat_a.argsort(), flat_b.argsort()
    assert not torch.equal(ranks_a, ranks_b), "different batches should reorder PX's scores, not only rescale them"
    s1, s2 = saliency_scores(model, "synflow", first), saliency_scores(model, "synflow", second)
    for name in s1:
        assert torch.equal(s1[name], s2[name])


def test_px_leaves_the_model_as_it_was() -> None:
    torch.manual_seed(0)
    model = TinyNet(width=6).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    prune_at_init(model, "px", 0.3, [batch(8)], rounds=3)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_px_keeps_every_resnet20_layer_alive_at_two_percent() -> None:
    """At 2% PX keeps well above the one-weight floor in every layer (none survives on the floor alone)."""
    torch.manual_seed(0)
    model = resnet20()
    masks = prune_at_init(model, "px", 0.02, [batch(8, size=16)], rounds=20)
    rows = density_report(model, masks)
    assert rows[-1]["kept"] == round(0.02 * rows[-1]["total"])
    for row in rows[:-1]:
        assert row["kept"] >= 0.1 * 0.02 * row["total"] and row["kept"] > 1, row
