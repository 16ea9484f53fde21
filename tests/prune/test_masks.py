"""Masks stay fixed through training (SGD with momentum and weight decay), survive a state-dict
round trip, bake into plain weights, and are reported per layer."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from das.errors import DasError
from das.prune import applied_masks, apply_masks, density_report, masks_from_state_dict, prune_at_init, remove_masks
from tests.tinynets import TinyNet, batch

# Tiny nets on a loaded 2-core machine: one thread is several times faster (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def masked_net() -> tuple[TinyNet, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = TinyNet(width=8)
    masks = prune_at_init(model, "magnitude", 0.2, input_shape=(3, 8, 8))
    apply_masks(model, masks)
    return model, masks


def test_masks_survive_sgd_with_momentum_and_weight_decay() -> None:
    model, masks = masked_net()
    start = {n: getattr(model.get_submodule(n.rpartition(".")[0]), "weight").detach().clone() for n in masks}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = batch(8)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    for name, mask in masks.items():
        module = model.get_submodule(name.rpartition(".")[0])
        assert (module.weight[~mask] == 0).all(), name
        assert (module.parametrizations.weight.original[~mask] == 0).all(), name  # not only hidden: zero
        assert not torch.equal(module.weight[mask], start[name][mask]), f"{name}: kept weights should train"


def test_masks_survive_a_state_dict_round_trip() -> None:
    model, masks = masked_net()
    state = copy.deepcopy(model.state_dict())
    fresh = TinyNet(width=8)
    apply_masks(fresh, masks_from_state_dict(state))
    fresh.load_state_dict(state)  # strict
    assert all(torch.equal(applied_masks(fresh)[n], masks[n]) for n in masks)
    x, _ = batch(4)
    model.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x), model(x))
    assert torch.equal(copy.deepcopy(model)(x), model(x))


def test_remove_masks_bakes_the_zeros_into_plain_weights() -> None:
    model, masks = masked_net()
    removed = remove_masks(model)
    assert all(torch.equal(removed[n], masks[n]) for n in masks)
    assert applied_masks(model) == {} and "fc.weight" in model.state_dict()
    for name, mask in masks.items():
        assert (model.get_submodule(name.rpartition(".")[0]).weight[~mask] == 0).all()


def test_density_report_rows_and_overall() -> None:
    model, masks = masked_net()
    rows = density_report(model)
    assert [r["name"] for r in rows] == [*masks, "overall"]
    for row in rows[:-1]:
        assert row["kept"] == int(masks[row["name"]].sum()) and row["total"] == masks[row["name"]].numel()
        assert row["shape"] == tuple(masks[row["name"]].shape) and row["density"] == row["kept"] / row["total"]
    assert rows[-1]["kept"] == sum(r["kept"] for r in rows[:-1]) and rows[-1]["density"] == pytest.approx(0.2, abs=1e-3)
    dense = density_report(TinyNet(width=8))
    assert all(r["density"] == 1.0 for r in dense)


def test_bad_masks_fail_with_one_line() -> None:
    model = TinyNet(width=8)
    for masks, hint in [
        ({"fc.weigth": torch.ones(10, 8, dtype=torch.bool)}, "did you mean 'fc.weight'"),
        ({"fc.weight": torch.ones(8, 10, dtype=torch.bool)}, "has shape (8, 10)"),
        ({"fc.weight": torch.full((10, 8), 0.5)}, "only 0 and 1"),
    ]:
        with pytest.raises(DasError) as info:
            apply_masks(model, masks)
        assert "\n" not in str(info.value) and hint in str(info.value), str(info.value)
    apply_masks(model, {"fc.weight": torch.ones(10, 8)})
    with pytest.raises(DasError, match="already carries a mask"):
        prune_at_init(model, "magnitude", 0.5, input_shape=(3, 8, 8))
