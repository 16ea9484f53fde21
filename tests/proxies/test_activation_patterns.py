"""nwot and swap read every activation, module or function, as the sign of its pre-activation.

Issue 8: hooking only ``nn.ReLU`` modules scored every network that calls ``F.relu`` (das's CIFAR
ResNets) or another activation (SiLU, Hardswish, GELU) a silent 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from das.errors import DasError
from das.proxies import score
from das.proxies.activations import ActivationWatch
from tests.tinynets import batch, ReluOnly


def hand_nwot(*codes: torch.Tensor) -> float:
    """log det of Σ c cᵀ + (1−c)(1−c)ᵀ over B×N binary code matrices."""
    kernel = sum(c @ c.T + (1 - c) @ (1 - c).T for c in (c.flatten(1).double() for c in codes))
    return float(torch.linalg.slogdet(kernel)[1])


def hand_swap(*codes: torch.Tensor) -> int:
    """Distinct columns (unit patterns over the images) of the concatenated code matrices."""
    return torch.unique(torch.cat([c.flatten(1) for c in codes], 1).T, dim=0).shape[0]


# --------------------------------------------------------------------------- F.relu == nn.ReLU

RELU_FORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "F.relu": F.relu,
    "F.relu inplace": lambda t: F.relu(t, inplace=True),
    "F.relu_": F.relu_,
    "torch.relu": torch.relu,
    "Tensor.relu": lambda t: t.relu(),
    "Tensor.relu_": lambda t: t.relu_(),
    "nn.ReLU inplace": nn.ReLU(inplace=True),
}


class ConvNet(nn.Module):
    """conv-bn-act ×2 → pool → linear, the activation given as a module or as a function."""

    def __init__(self, act: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.act1: Callable[[torch.Tensor], torch.Tensor] = act or nn.ReLU()
        self.act2: Callable[[torch.Tensor], torch.Tensor] = act or nn.ReLU()
        self.fc = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.bn1(self.conv1(x)))
        h = self.act2(self.bn2(self.conv2(h)))
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize("form", list(RELU_FORMS))
def test_functional_and_module_relu_score_the_same(form: str) -> None:
    torch.manual_seed(0)
    modules = ConvNet()
    functional = ConvNet(RELU_FORMS[form])
    functional.load_state_dict(modules.state_dict())
    b = [batch(12)]
    expected = score(modules, b, ["nwot", "swap"])
    assert expected["nwot"] > 0 and expected["swap"] > 1
    assert score(functional, b, ["nwot", "swap"]) == expected  # bitwise


def test_cifar_resnet_teachers_score_nonzero_and_differ() -> None:
    from teachers import create_teacher

    b = [batch(16, size=8)]
    scores = []
    for name, seed in (("resnet20", 0), ("resnet20", 1), ("resnet32", 0)):
        torch.manual_seed(seed)
        scores.append(score(create_teacher(name, num_classes=10), b, ["nwot", "swap"]))
    for s in scores:
        assert s["nwot"] > 0 and s["swap"] > 1
    for key in ("nwot", "swap"):
        assert len({s[key] for s in scores}) == 3, key  # each depth and each init gets its own score


# --------------------------------------------------------------------------- other activations


class OneAct(nn.Module):
    """conv → activation → pool → linear, so the pre-activation is the conv output."""

    def __init__(self, act: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = act
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "nn.GELU": nn.GELU(),
    "F.gelu tanh": lambda t: F.gelu(t, approximate="tanh"),
    "nn.SiLU": nn.SiLU(),
    "F.silu inplace": lambda t: F.silu(t, inplace=True),
    "nn.Hardswish": nn.Hardswish(),
    "nn.ReLU6": nn.ReLU6(),
    "F.relu6": F.relu6,
    "nn.LeakyReLU": nn.LeakyReLU(0.1),
    "nn.ELU": nn.ELU(),
    "nn.Mish": nn.Mish(),
    "nn.PReLU": nn.PReLU(),
    "nn.Softplus": nn.Softplus(),
}


@pytest.mark.parametrize("name", list(ACTS))
def test_other_activations_give_the_sign_of_their_pre_activation(name: str) -> None:
    torch.manual_seed(0)
    model = OneAct(ACTS[name])
    x, y = batch(8, size=4)
    model.train()
    with torch.no_grad():
        pre = model.conv(x)
    assert ((pre > -3) & (pre < 0)).any()  # units where GELU/SiLU/Hardswish are nonzero but "off"
    c = (pre > 0).double()
    got = score(model, [(x, y)], ["nwot", "swap"])
    assert got["nwot"] == pytest.approx(hand_nwot(c), rel=1e-9)
    assert got["swap"] == hand_swap(c)


def test_an_inplace_activation_is_read_before_it_writes() -> None:
    pre = torch.tensor([[-2.0, -0.5, 0.0, 1.5]])
    for act in (lambda t: F.relu(t, inplace=True), F.relu_, lambda t: t.relu_(), nn.ReLU(inplace=True),
                lambda t: F.leaky_relu(t, -1.0, inplace=True), nn.Hardswish(inplace=True)):  # fmt: skip
        seen: list[torch.Tensor] = []
        t = pre.clone()
        with ActivationWatch([lambda p: seen.append(p.clone())]):
            act(t)
        assert len(seen) == 1 and torch.equal(seen[0], pre)
    # leaky_relu with slope −1 is |z|: read after the write, every unit would be on
    model = OneAct(lambda t: F.leaky_relu(t, -1.0, inplace=True))
    x, y = batch(8, size=4)
    model.train()
    with torch.no_grad():
        c = (model.conv(x) > 0).double()
    assert score(model, [(x, y)], ["nwot"])["nwot"] == pytest.approx(hand_nwot(c), rel=1e-9)


class ReluTwiceInPlace(nn.Module):
    """Two ReLUs read one tensor object, the second after it was negated in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        a = F.relu(h)
        h.mul_(-1)
        return self.fc((a + F.relu(h)).mean((2, 3)))


def test_a_tensor_changed_in_place_is_read_again() -> None:
    model = ReluTwiceInPlace()
    x, y = batch(8, size=4)
    model.train()
    with torch.no_grad():
        pre = model.conv(x)
    first, second = (pre > 0).double(), (-pre > 0).double()
    got = score(model, [(x, y)], ["nwot", "swap"])
    assert got["nwot"] == pytest.approx(hand_nwot(first, second), rel=1e-9)
    assert got["swap"] == hand_swap(first, second)


# --------------------------------------------------------------------------- counted once


def test_an_relu_module_is_counted_once() -> None:
    # the input is the pre-activation: image codes (1,1,0,1), (0,0,0,1), (1,1,0,0) over 4 units
    x = torch.tensor([[1.0, 2, -1, 3], [-1, -2, -1, 1], [2, 1, -3, -1]]).reshape(3, 1, 1, 4)
    c = (x.flatten(1) > 0).double()
    assert (c @ c.T + (1 - c) @ (1 - c).T).tolist() == [[4, 2, 3], [2, 4, 1], [3, 1, 4]]  # det 20
    seen: list[torch.Tensor] = []
    with ActivationWatch([seen.append]):
        ReluOnly(4)(x)
    assert len(seen) == 1  # the module and the F.relu it calls are one activation
    got = score(ReluOnly(4), [(x, torch.zeros(3, dtype=torch.long))], ["nwot", "swap"])
    assert got["nwot"] == pytest.approx(math.log(20), rel=1e-12)  # counted twice: log det 2K = log 160
    assert got["swap"] == 3  # unit patterns (1,0,1) twice, (0,0,0), (1,1,0)


# --------------------------------------------------------------------------- refusals


class Squashed(nn.Module):
    """conv → a squashing function (not a counted activation) → pool → linear."""

    def __init__(self, squash: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.squash = squash
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.squash(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("proxy", ["nwot", "swap"])
@pytest.mark.parametrize("squash", [nn.Identity(), torch.sigmoid, nn.Tanh(), nn.Hardtanh(), nn.Hardsigmoid()], ids=str)
def test_a_network_without_activations_is_refused(proxy: str, squash: Callable[[torch.Tensor], torch.Tensor]) -> None:
    with pytest.raises(DasError, match=r"^[^\n]*Squashed applies no activation das recognises \(relu, relu6") as err:
        score(Squashed(squash), [batch(4)], [proxy])
    assert "\n" not in str(err.value)


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3 * 8 * 8, 16), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x.flatten(1))))


def test_swap_refuses_a_network_without_4d_activations_and_nwot_scores_it() -> None:
    torch.manual_seed(0)
    x, y = batch(8)
    model = Mlp()
    with pytest.raises(DasError, match=r"swap counts the activation patterns of convolutional units .* Mlp applies"):
        score(model, [(x, y)], ["swap"])
    model.train()
    with torch.no_grad():
        c = (model.fc1(x.flatten(1)) > 0).double()
    assert score(model, [(x, y)], ["nwot"])["nwot"] == pytest.approx(hand_nwot(c), rel=1e-9)


def test_fused_equals_one_by_one_on_functional_activations() -> None:
    from teachers import create_teacher

    torch.manual_seed(0)
    model = create_teacher("resnet20", num_classes=10)
    b = [batch(8, size=8, seed=i) for i in range(2)]
    proxies = ["nwot", "swap", "snip", "fisher", "jacov", "zico", "meco"]
    assert score(model, b, proxies) == score(model, b, proxies, fused=False)
