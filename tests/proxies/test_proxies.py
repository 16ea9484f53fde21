"""Every registered proxy: finite, deterministic, fused == one by one, model left unchanged.

The defining property of each proxy is checked against a hand computation on a tiny net in
the per-proxy tests below.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from das.errors import DasError
from das.proxies import ENSEMBLE_MEMBERS, PROXIES, EnsembleReference, Proxy, ScoringContext, score
from das.nets.weights import prunable_layers
from tests.tinynets import batch, ReluOnly, TinyNet

ALL = PROXIES.names()


def batches(n: int = 2, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [batch(size, seed=i) for i in range(n)]


def net() -> TinyNet:
    return TinyNet(width=6, stages=True)


@pytest.fixture(scope="module")
def teacher() -> TinyNet:
    torch.manual_seed(1)
    return TinyNet(width=10).eval()


@pytest.fixture(scope="module")
def reference() -> EnsembleReference:
    population = []
    for i, width in enumerate((3, 4, 5, 7, 9)):
        torch.manual_seed(i)
        population.append(score(TinyNet(width=width, stages=True), batches(), list(ENSEMBLE_MEMBERS)))
    return EnsembleReference.from_population(population)


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modes": {n: m.training for n, m in model.named_modules()},
        "flags": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
    }


def test_registry_has_the_whole_suite() -> None:
    expected = {
        "params", "flops", "grad_norm", "snip", "grasp", "fisher", "synflow", "jacov", "nwot", "zico", "swap", "meco",
        "az_expressivity", "az_progressivity", "az_trainability", "az_complexity",
        "diswot", "diswot_relation", "diswot_semantic",
    }  # fmt: skip
    assert expected <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_finite_deterministic_and_model_unchanged(name: str, teacher: TinyNet, reference: EnsembleReference) -> None:
    torch.manual_seed(0)
    model = net().eval()
    model.fc.weight.requires_grad_(False)
    model.body[0][0].weight.grad = torch.ones_like(model.body[0][0].weight)
    before = snapshot(model)
    rng = torch.get_rng_state()
    first = score(model, batches(), [name], teacher=teacher, reference=reference)[name]
    second = score(model, batches(), [name], teacher=teacher, reference=reference)[name]
    assert math.isfinite(first)
    assert first == second
    assert torch.equal(torch.get_rng_state(), rng), "scoring moved the caller's RNG"
    after = snapshot(model)
    assert after["modes"] == before["modes"] and after["flags"] == before["flags"]
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    for key, value in before["grads"].items():
        assert (value is None and after["grads"][key] is None) or torch.equal(after["grads"][key], value), key


def test_fused_equals_one_by_one(teacher: TinyNet, reference: EnsembleReference) -> None:
    for model in (net(), TinyNet(width=5, depth=3, stages=True)):
        fused = score(model, batches(), ALL, teacher=teacher, reference=reference)
        alone = score(model, batches(), ALL, teacher=teacher, reference=reference, fused=False)
        assert fused == alone  # bitwise: the shared pass computes exactly what each proxy's own pass does
        assert list(fused) == ALL


def test_subsets_agree_with_the_full_suite(teacher: TinyNet, reference: EnsembleReference) -> None:
    model = net()
    full = score(model, batches(), ALL, teacher=teacher, reference=reference)
    for group in (["snip", "nwot"], ["jacov", "grasp", "zico"], ["az_trainability", "fisher", "swap"]):
        assert score(model, batches(), group) == {n: full[n] for n in group}


def test_seed_changes_only_random_probes() -> None:
    model = net()
    a = score(model, batches(), ["az_trainability", "snip"], seed=0)
    b = score(model, batches(), ["az_trainability", "snip"], seed=1)
    assert a["snip"] == b["snip"]
    assert a["az_trainability"] != b["az_trainability"]


def test_a_proxy_reading_an_undeclared_need_fails() -> None:
    sneaky = Proxy("sneaky", lambda ctx: float(sum(g.sum() for g in ctx.weight_grads())))
    with PROXIES.registered("sneaky", sneaky), pytest.raises(DasError, match="weight_grads"):
        score(net(), batches(), ["sneaky"])


def test_a_non_finite_score_names_the_proxy() -> None:
    with PROXIES.registered("broken", Proxy("broken", lambda ctx: float("nan"))), pytest.raises(DasError, match="'broken'"):
        score(net(), batches(), ["broken"])


def test_unknown_needs_are_rejected() -> None:
    with pytest.raises(DasError, match="unknown proxy needs"):
        ScoringContext(net(), batches(), needs={"relu_kernal"})


# --------------------------------------------------------------------------- hand computations


def ce_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    model.train()
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return [(m.weight.detach().clone(), m.weight.grad.clone()) for _, m in prunable_layers(model)]


def test_snip_and_grad_norm_match_hand_computation() -> None:
    model, (x, y) = TinyNet(width=4), batch(8)
    s = score(model, [(x, y)], ["snip", "grad_norm"])
    pairs = ce_grads(model, x, y)
    assert s["snip"] == pytest.approx(sum(float((g * w).abs().sum()) for w, g in pairs), rel=1e-6)
    assert s["grad_norm"] == pytest.approx(sum(float(g.norm()) for _, g in pairs), rel=1e-6)


def test_fisher_matches_hand_computation() -> None:
    model, (x, y) = TinyNet(width=4), batch(8)
    got = score(model, [(x, y)], ["fisher"])["fisher"]
    model.train()
    outs: list[torch.Tensor] = []

    def keep(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
        out.retain_grad()
        outs.append(out)

    hooks = [m.register_forward_hook(keep) for _, m in prunable_layers(model)]
    F.cross_entropy(model(x), y).backward()
    for h in hooks:
        h.remove()
    expected = 0.0
    for a in outs:
        a, g = a.detach(), a.grad
        per = (a * g).sum(dim=(2, 3)) if a.dim() == 4 else a * g  # B×C
        expected += float(0.5 * per.pow(2).mean(0).sum())
    assert got == pytest.approx(expected, rel=1e-5)


def test_params_matches_a_hand_count() -> None:
    w, classes = 6, 10
    expected = 3 * w * 9 + 2 * w + w * w * 9 + 2 * w + w * classes + classes
    assert score(TinyNet(width=w), batches(1), ["params"])["params"] == expected


class ConvLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


def test_flops_matches_a_hand_count() -> None:
    # 2 FLOPs per multiply-add: conv 4 outputs × 8×8 positions × 3·3·3 taps, linear 256×10
    expected = 2 * 4 * 8 * 8 * 3 * 9 + 2 * 256 * 10
    s = score(ConvLinear(), batches(1), ["flops", "az_complexity"])
    assert s["flops"] == s["az_complexity"] == expected


def test_synflow_ignores_the_batch_and_matches_hand_computation() -> None:
    model = TinyNet(width=5)
    values = {score(model, [batch(8, seed=s)], ["synflow"])["synflow"] for s in range(3)}
    values.add(score(model, [(torch.randn(2, 3, 8, 8) * 100, torch.zeros(2, dtype=torch.long))], ["synflow"])["synflow"])
    assert len(values) == 1
    # by hand: |θ| weights in float64, BN bypassed, ones input, R = Σ outputs
    body = model.body
    convs = [body[0], body[3]]
    w1, w2 = (c.weight.detach().double().abs().requires_grad_() for c in convs)
    fw, fb = model.fc.weight.detach().double().abs().requires_grad_(), model.fc.bias.detach().double().abs()
    h = F.conv2d(F.conv2d(torch.ones(1, 3, 8, 8, dtype=torch.double), w1, padding=1), w2, padding=1)
    r = F.linear(h.mean((2, 3)), fw, fb).sum()
    grads = torch.autograd.grad(r, [w1, w2, fw])
    s = sum(float((w.detach() * g).abs().sum()) for w, g in zip([w1, w2, fw], grads))
    assert values.pop() == pytest.approx(math.log1p(s), rel=1e-12)


def test_synflow_is_finite_on_a_100_layer_net() -> None:
    deep = TinyNet(width=8, depth=100)
    value = score(deep, [batch(4)], ["synflow"])["synflow"]
    assert math.isfinite(value) and value > 0


class Chain(nn.Module):
    """Linear(1,1) layers with weight 1e3: R = 1e3^L overflows float64 past ~100 layers."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[nn.Linear(1, 1, bias=False) for _ in range(depth)])
        for layer in self.layers:
            nn.init.constant_(layer.weight, -1e3)  # the sign is dropped by |θ|

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def test_synflow_rescales_where_float64_overflows() -> None:
    depth = 150  # R = 1e450, and every layer contributes R, so S = 150·1e450
    value = score(Chain(depth), [(torch.ones(2, 1), torch.zeros(2, dtype=torch.long))], ["synflow"])["synflow"]
    assert value == pytest.approx(math.log(depth) + 450 * math.log(10), rel=1e-12)
    with pytest.raises(DasError, match="synflow overflows"):
        score(Chain(400), [(torch.ones(2, 1), torch.zeros(2, dtype=torch.long))], ["synflow"])


def test_nwot_and_jacov_are_invariant_to_batch_order() -> None:
    model = TinyNet(width=6)
    x, y = batch(16)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(3))
    a = score(model, [(x, y)], ["nwot", "jacov", "swap"])
    b = score(model, [(x[perm], y[perm])], ["nwot", "jacov", "swap"])
    for name in a:
        assert a[name] == pytest.approx(b[name], rel=1e-6), name


def test_nwot_kernel_by_hand() -> None:
    from das.proxies.nwot import log_det

    model = TinyNet(width=3, depth=1)
    x, y = batch(5)
    model.train()
    with torch.no_grad():
        pre = model.body[1](model.body[0](x)).flatten(1)
    c = (pre > 0).double()
    kernel = c @ c.T + (1 - c) @ (1 - c).T
    assert score(model, [(x, y)], ["nwot"])["nwot"] == pytest.approx(float(torch.linalg.slogdet(kernel)[1]), rel=1e-9)
    assert log_det(torch.ones(3, 3)) == 0.0  # singular kernel: the floor, not −∞


def test_zico_needs_two_batches() -> None:
    with pytest.raises(DasError, match="at least 2 probe batches"):
        score(TinyNet(), batches(1), ["zico"])


def test_zico_matches_hand_computation() -> None:
    model, bs = TinyNet(width=4), batches(3)
    got = score(model, bs, ["zico"])["zico"]
    per_batch = [[g for _, g in ce_grads(model, x, y)] for x, y in bs]
    expected = 0.0
    for layer in zip(*per_batch):
        g = torch.stack([t.flatten().double() for t in layer])
        std, mean_abs = g.std(0, correction=0), g.abs().mean(0)
        expected += math.log(float((mean_abs[std > 0] / std[std > 0]).sum()))
    assert got == pytest.approx(expected, rel=1e-6)


def test_grasp_matches_a_double_backward() -> None:
    model, (x, y) = TinyNet(width=4), batch(8)
    got = score(model, [(x, y)], ["grasp"])["grasp"]
    model.train()
    weights = [m.weight for _, m in prunable_layers(model)]
    loss = F.cross_entropy(model(x), y)
    g = [t.detach() for t in torch.autograd.grad(loss, weights, retain_graph=True)]
    first = torch.autograd.grad(loss, weights, create_graph=True)
    hg = torch.autograd.grad(sum((a * b).sum() for a, b in zip(g, first)), weights)
    expected = -sum(float((w.detach() * h).sum()) for w, h in zip(weights, hg))
    assert got == pytest.approx(expected, rel=1e-5)


def test_jacov_score_of_known_correlations() -> None:
    from das.proxies.jacov import jacov_score

    k = 1e-5
    # rows of a 4×4 Hadamard matrix without its constant row are centred and orthogonal: Σ_J = I
    hadamard = torch.tensor([[1.0, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
    assert jacov_score(hadamard) == pytest.approx(-3 * (math.log(1 + k) + 1 / (1 + k)), rel=1e-9)
    # identical Jacobians: eigenvalues (3, 0, 0); a dead (zero) Jacobian counts as eigenvalue 0
    same = hadamard[:1].repeat(3, 1)
    worst = -(math.log(3 + k) + 1 / (3 + k)) - 2 * (math.log(k) + 1 / k)
    assert jacov_score(same) == pytest.approx(worst, rel=1e-9)
    assert jacov_score(torch.zeros(3, 4)) == pytest.approx(-3 * (math.log(k) + 1 / k), rel=1e-9)


# --------------------------------------------------------------------------- meco, swap, AZ-NAS


def test_meco_of_orthogonal_and_duplicate_channels() -> None:
    from das.proxies.meco import min_correlation_eigenvalue

    orth = torch.tensor([[1.0, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]).reshape(3, 2, 2)
    assert min_correlation_eigenvalue(orth) == pytest.approx(1.0)
    dup = torch.stack([orth[0], orth[0], orth[1]])
    assert min_correlation_eigenvalue(dup) == pytest.approx(0.0, abs=1e-12)
    # one channel (a width-0.5 resnet_cifar stage at C = 2): its 1×1 correlation is 1; a constant one 0
    assert min_correlation_eigenvalue(orth[:1]) == pytest.approx(1.0)
    assert min_correlation_eigenvalue(torch.ones(1, 2, 2)) == 0.0


class PassThrough(nn.Module):
    """A 1×1 identity convolution, then pool and classifier: one distinct 4-D map, the input's copy."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(channels)[:, :, None, None])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).flatten(1))


def test_meco_counts_each_distinct_map_once() -> None:
    orth = torch.tensor([[1.0, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]).reshape(1, 3, 2, 2)
    x = torch.cat([orth, torch.randn(3, 3, 2, 2)])
    # conv output = x (λ_min 1 on the first image); the pooled 1×1 map has no correlation (0)
    assert score(PassThrough(), [(x, torch.zeros(4, dtype=torch.long))], ["meco"])["meco"] == pytest.approx(1.0)


def test_swap_counts_distinct_patterns_by_hand() -> None:
    # 4 units over 3 images, patterns (1,0,1), (1,0,1), (0,0,0), (1,1,1): three distinct
    x = torch.tensor([[1.0, 2, -1, 3], [-1, -2, -1, 1], [2, 1, -3, 1]]).reshape(3, 1, 1, 4)
    assert score(ReluOnly(4), [(x, torch.zeros(3, dtype=torch.long))], ["swap"])["swap"] == 3


def test_swap_packing_beyond_64_images() -> None:
    from das.proxies.swap import count_patterns, pack_patterns

    gen = torch.Generator().manual_seed(0)
    for n in (5, 63, 64, 65, 130):
        codes = torch.rand(n, 200, generator=gen) > 0.5
        codes[:, 1] = codes[:, 0]  # a duplicate pattern
        codes[-1, 2] = ~codes[-1, 0]
        codes[:-1, 2] = codes[:-1, 0]  # differs from unit 0 only on the last image
        naive = torch.unique(codes.T, dim=0).shape[0]
        assert count_patterns([pack_patterns(codes)]) == naive


def test_az_expressivity_of_isotropic_and_rank_one_features() -> None:
    from das.proxies.az import expressivity_of

    # three centred orthogonal unit-variance channels over 4 positions: covariance I, entropy log 3
    iso = torch.tensor([[1.0, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]).reshape(1, 3, 2, 2)
    assert expressivity_of(iso) == pytest.approx(math.log(3), abs=1e-6)
    rank_one = torch.stack([iso[0, 0], 2 * iso[0, 0], -iso[0, 0]]).unsqueeze(0)
    assert expressivity_of(rank_one) == pytest.approx(0.0, abs=1e-6)
    assert expressivity_of(torch.ones(2, 3, 2, 2)) == 0.0  # zero covariance: 0, not NaN


def test_az_trainability_of_scaled_and_identity_blocks() -> None:
    from das.proxies.az import _DEAD_BLOCK, block_trainability

    gen = torch.Generator().manual_seed(0)
    g_out = torch.randint(0, 2, (64, 4, 8, 8), generator=gen).float() * 2 - 1
    assert block_trainability("b", g_out.clone(), g_out) == _DEAD_BLOCK  # identity block
    # g_in = 2·g_out: E[g_in g_outᵀ] ≈ 2I, σ ≈ 2, score ≈ −2 − 1/2 + 2
    assert block_trainability("b", 2 * g_out, g_out) == pytest.approx(-0.5, abs=0.05)
    # a stride-2 block: the input gradient is pixel-unshuffled to the output resolution
    g_in = torch.randn(64, 1, 16, 16, generator=gen)
    assert math.isfinite(block_trainability("b", g_in, g_out))


def test_az_reads_blocks_from_the_feature_contract() -> None:
    from das.proxies.az import blocks, expressivity_of

    model, (x, y) = TinyNet(width=4, depth=3, stages=True), batch(8)
    ctx = ScoringContext(model, [(x, y)])
    assert blocks(ctx) == ["body.0", "body.1", "body.2"]
    s = score(model, [(x, y)], ["az_expressivity", "az_progressivity"])
    model.train()
    with torch.no_grad():
        f1 = model.body[0](x)
        f2 = model.body[1](f1)
        f3 = model.body[2](f2)
    values = [expressivity_of(f) for f in (f1, f2, f3)]  # the raw input is not a feature
    assert s["az_expressivity"] == pytest.approx(sum(values), rel=1e-9)
    assert s["az_progressivity"] == pytest.approx(min(values[1] - values[0], values[2] - values[1]), rel=1e-9, abs=1e-12)


def test_az_needs_two_block_features() -> None:
    with pytest.raises(DasError, match="stage feature points"):
        score(TinyNet(), batches(1), ["az_progressivity"])


class SharedInputRelus(nn.Module):
    """Two ReLU modules reading one tensor, as an NB201 node feeds each conv edge through its own ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu_a, self.relu_b = nn.ReLU(), nn.ReLU()
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.fc((self.relu_a(h) + self.relu_b(h)).mean((2, 3)))


def test_relus_sharing_an_input_count_twice_in_nwot_and_once_in_swap() -> None:
    x, y = batch(6)
    model = SharedInputRelus()
    both = score(model, [(x, y)], ["nwot", "swap"])
    model.relu_b = nn.Identity()
    one = score(model, [(x, y)], ["nwot", "swap"])
    assert both["nwot"] == pytest.approx(one["nwot"] + 6 * math.log(2), rel=1e-9)  # det(2K) = 2^B det K
    assert both["swap"] == one["swap"]


class TwoStages(nn.Module):
    """Stages as children of the root (as timm declares them), the second downsampling; final = last stage."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer2(self.layer1(x)).mean((2, 3)))

    def feature_points(self) -> list:
        from das.features import FeaturePoint

        return [
            FeaturePoint("layer1", 4, 1, "stage"),
            FeaturePoint("layer2", 8, 2, "stage"),
            FeaturePoint("layer2", 8, 2, "final"),
            FeaturePoint("fc", 10, 1, "logits"),
        ]


def test_az_on_stages_that_are_not_in_one_container() -> None:
    from das.proxies.az import blocks

    model, bs = TwoStages(), batches(1)
    assert blocks(ScoringContext(model, bs)) == ["layer1", "layer2"]  # the final map is not counted twice
    s = score(model, bs, ["az_expressivity", "az_progressivity", "az_trainability"])
    assert all(math.isfinite(v) for v in s.values())
    assert s["az_trainability"] > -10  # one real (downsampling) block, not a dead one
