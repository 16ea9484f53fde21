"""The timm space: each family builds through timm at the chosen depth and width, runs on CIFAR-
and digits-sized images, declares timm's feature points, round-trips its specs, enumerates the
product of its choice lists, scores with proxies and the search's objective, and trains with train.py."""

from __future__ import annotations

import itertools
import math

import optuna
import pytest
import torch
from torch import nn

from das.cli import guarded
from das.distill import command as train
from das.errors import DasError
from das.features import FeatureTap, feature_points, final_point
from das.models import build_model
from das.proxies import score
from das.search.checks import make_space
from das.search.config import BudgetConfig, SpaceConfig
from das.search.trial_objective import TrialObjective
from das.spaces import SPACES, create_space
from das.spaces.timm_space import TimmSpace
from das.spec import ArchSpec
from tests.cli.test_train_cli import TINY

# The smallest settings that still exercise each family's choices.
TINY_ARGS = {
    "resnet": {"family": "resnet", "depths": [1, 2], "widths": [4, 8]},
    "mobilenetv3": {"family": "mobilenetv3", "channel_multipliers": [0.25, 0.5], "depth_multipliers": [0.5, 1.0]},
    "efficientnet": {"family": "efficientnet", "channel_multipliers": [0.25, 0.5], "depth_multipliers": [0.5, 1.0]},
}
FAMILIES = list(TINY_ARGS)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def shapes(model: nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in model.state_dict().items()}


@pytest.fixture(params=FAMILIES)
def space(request: pytest.FixtureRequest) -> TimmSpace:
    return create_space("timm", **TINY_ARGS[request.param])


def test_registered_and_finite() -> None:
    assert SPACES.get("timm") is TimmSpace
    assert TimmSpace.finite is True


@pytest.mark.parametrize("size", [16, 32], ids=["digits16", "cifar32"])
def test_forward_and_feature_points(space: TimmSpace, size: int, one_thread) -> None:
    model = space.build(space.largest(), num_classes=7)
    points = feature_points(model)  # declared, as for timm: teachers
    roles = [p.role for p in points]
    assert roles.count("final") == 1 and roles.count("logits") == 1 and roles.count("stage") >= 3
    logits = dict(model.named_modules())[points[-1].module]
    assert isinstance(logits, nn.Linear) and logits.out_features == 7 and points[-1].role == "logits"
    with FeatureTap(model, [p.module for p in points]) as tap:
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    for p in points:
        assert tap.outputs[p.module].shape[1] == p.channels, p
    # Reductions are timm's (relative to the input), so they grow along the network.
    maps = [p.reduction for p in points if p.role != "logits"]
    assert maps == sorted(maps) and maps[-1] == 32


def test_resnet_choices_are_timm_layers_and_channels() -> None:
    space = create_space("timm", **TINY_ARGS["resnet"])
    model = space.build(space.spec(layers=[2, 1, 2, 1], width=8), 10)
    assert type(model).__name__ == "ResNet"
    assert [len(getattr(model, f"layer{s}")) for s in (1, 2, 3, 4)] == [2, 1, 2, 1]
    assert [getattr(model, f"layer{s}")[-1].conv2.out_channels for s in (1, 2, 3, 4)] == [8, 16, 32, 64]
    assert model.fc.in_features == 64 and model.fc.out_features == 10
    # Any timm ResNet's other arguments are kept: resnet50 brings Bottlenecks (4× expansion).
    bottleneck = create_space("timm", family="resnet", model="resnet50", depths=[1], widths=[4])
    assert bottleneck.build(bottleneck.smallest(), 10).fc.in_features == 4 * 8 * 4


@pytest.mark.parametrize("family", ["mobilenetv3", "efficientnet"])
def test_multipliers_scale_width_and_depth(family: str) -> None:
    space = create_space("timm", **TINY_ARGS[family])
    nets = {
        (cm, dm): space.build(space.spec(channel_multiplier=cm, depth_multiplier=dm), 10)
        for cm, dm in itertools.product((0.25, 0.5), (0.5, 1.0))
    }
    blocks = {k: sum(len(stage) for stage in net.blocks) for k, net in nets.items()}
    assert blocks[(0.25, 0.5)] == blocks[(0.5, 0.5)] < blocks[(0.25, 1.0)] == blocks[(0.5, 1.0)]
    final = {k: final_point(feature_points(net)).channels for k, net in nets.items()}
    assert final[(0.25, 0.5)] == final[(0.25, 1.0)] < final[(0.5, 0.5)] == final[(0.5, 1.0)]
    assert count(nets[(0.25, 0.5)]) < count(nets[(0.5, 0.5)]) < count(nets[(0.5, 1.0)])
    assert nets[(0.5, 1.0)].classifier.out_features == 10


def test_spec_json_round_trip_rebuilds_the_same_network(space: TimmSpace, tmp_path) -> None:
    spec = space.largest()
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec and hash(again) == hash(spec)
    assert dict(again.space_args)["family"] == space.family
    built = space.build(spec, 10)
    for rebuilt in (again.build(10), build_model(again, 10), build_model(spec.to_json(), 10)):
        assert shapes(rebuilt) == shapes(built)
        assert [p.module for p in feature_points(rebuilt)] == [p.module for p in feature_points(built)]
    arch = tmp_path / "best_arch.json"
    spec.save(arch, search={"params": count(built)})
    assert shapes(build_model(str(arch), 10)) == shapes(built)


def test_model_args_pass_through_and_round_trip() -> None:
    space = create_space("timm", family="resnet", depths=[1], widths=[4], model_args={"output_stride": 8})
    spec = space.smallest()
    model = ArchSpec.from_json(spec.to_json()).build(10)
    with FeatureTap(model, ["layer4"]) as tap:
        model(torch.randn(2, 3, 32, 32))
    assert tap.outputs["layer4"].shape[-1] == 4  # dilated last stages: 32 / 8, not 1


def test_enumerate_is_the_product_of_the_choices(space: TimmSpace) -> None:
    specs = list(space.enumerate())
    assert len(specs) == len(set(specs)) == space.size
    if space.family == "resnet":
        assert space.size == 2**4 * 2
        assert {(s.choice("layers"), s.choice("width")) for s in specs} == {
            (layers, w) for layers in itertools.product((1, 2), repeat=4) for w in (4, 8)
        }
    else:
        assert {(s.choice("channel_multiplier"), s.choice("depth_multiplier")) for s in specs} == set(
            itertools.product((0.25, 0.5), (0.5, 1.0))
        )
    assert specs[0] == space.smallest() and specs[-1] == space.largest()
    assert len({space.canonical(s) for s in specs}) == len(specs)  # no two members alike here


def test_canonical_merges_multipliers_timm_rounds_alike() -> None:
    # ceil(0.9·r) = r for MobileNetV3-Small's stage repeats (1 to 3): the same network as 1.0.
    space = create_space("timm", family="mobilenetv3", channel_multipliers=[0.25], depth_multipliers=[0.5, 0.9, 1.0])
    key = {dm: space.canonical(space.spec(channel_multiplier=0.25, depth_multiplier=dm)) for dm in (0.5, 0.9, 1.0)}
    assert key[0.9] == key[1.0] != key[0.5]
    a, b = (space.build(space.spec(channel_multiplier=0.25, depth_multiplier=dm), 10) for dm in (0.9, 1.0))
    assert shapes(a) == shapes(b)


def test_suggest_with_optuna(space: TimmSpace) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    spec = space.suggest(trial)
    assert spec.space == "timm"
    if space.family == "resnet":
        assert set(trial.params) == {"stage1_layers", "stage2_layers", "stage3_layers", "stage4_layers", "width"}
        assert spec.choice("layers") == tuple(trial.params[f"stage{s}_layers"] for s in (1, 2, 3, 4))
        assert spec.choice("width") == trial.params["width"]
    else:
        assert dict(spec.choices) == trial.params


def test_scores_with_proxies_and_the_search_objective(one_thread) -> None:
    space = create_space("timm", **TINY_ARGS["resnet"])
    model = space.build(space.smallest(), 10)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 10, (4,), generator=g)
    scores = score(model, [(x, y)], ["params", "snip"])
    assert scores["params"] == count(model)
    assert math.isfinite(scores["snip"]) and scores["snip"] > 0
    # The search's own objective samples, builds and scores timm students.
    objective = TrialObjective(space, [(x, y)], None, ["params", "snip"], BudgetConfig(), 10, (3, 16, 16), torch.device("cpu"))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=2)
    for trial in study.trials:
        spec = ArchSpec.from_json(trial.user_attrs["arch"])
        assert trial.value == count(spec.build(10)) == trial.user_attrs["params"]


def test_search_config_accepts_timm_args() -> None:
    space, full = make_space(SpaceConfig(name="timm", args={"family": "efficientnet", "depth_multipliers": [0.5]}))
    assert isinstance(space, TimmSpace) and space.depth_multipliers == (0.5,)
    assert full["family"] == "efficientnet"
    with pytest.raises(DasError, match="'depth_multiplier' .*did you mean 'depth_multipliers'"):
        make_space(SpaceConfig(name="timm", args={"depth_multiplier": [0.5]}))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"family": "resnt"}, ["'resnt'", "did you mean 'resnet'"]),
        ({"family": "mobilenetv3", "depths": [1]}, ["'depths'", "channel_multipliers"]),
        ({"family": "resnet", "model": "resnet181"}, ["'resnet181'", "did you mean"]),
        ({"family": "resnet", "model": "mobilenetv3_small_100"}, ["not a timm ResNet"]),
        ({"family": "mobilenetv3", "model": "mobilenetv3_small_075"}, ["mobilenetv3_small_100, mobilenetv3_large_100"]),
        ({"family": "resnet", "widths": [8, 8]}, ["distinct positive integers", "[8, 8]"]),
        ({"family": "efficientnet", "channel_multipliers": [0]}, ["distinct positive numbers"]),
        ({"family": "resnet", "model_args": {"pretrained": True}}, ["may not set pretrained"]),
        ({"family": "resnet", "model_args": {"no_such_arg": 1}}, ["timm cannot build resnet18", "no_such_arg"]),
        ({"family": "mobilenetv3", "model_args": {"output_stride": 8}}, ["timm cannot build", "output_stride"]),
        ({"family": "resnet", "model_args": "{not json"}, ["model_args", "neither a mapping nor JSON"]),
    ],
)
def test_bad_space_args_fail_in_one_line(kwargs: dict, words: list[str]) -> None:
    with pytest.raises(DasError) as info:
        create_space("timm", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    "family, choices, words",
    [
        ("resnet", {"layers": [1, 1, 1], "width": 4}, ["one block count per stage (4)"]),
        ("resnet", {"layers": [1, 1, 3, 1], "width": 4}, ["has 3", "accepted: 1, 2"]),
        ("resnet", {"layers": [1, 1, 1, 1], "width": 16}, ["width 16", "accepted: 4, 8"]),
        ("resnet", {"layers": [1, 1, 1, 1]}, ["two choices"]),
        ("mobilenetv3", {"channel_multiplier": 0.3, "depth_multiplier": 0.5}, ["0.3", "accepted: 0.25, 0.5"]),
    ],
)
def test_bad_specs_fail_in_one_line(family: str, choices: dict, words: list[str]) -> None:
    space = create_space("timm", **TINY_ARGS[family])
    with pytest.raises(DasError) as info:
        space.spec(**choices)
    # A hand-made spec bypasses spec(); build refuses it too.
    with pytest.raises(DasError) as built:
        ArchSpec.make("timm", choices, dict(space.space_args)).build(10)
    for message in (str(info.value), str(built.value)):
        assert "\n" not in message
        for word in words:
            assert word in message, message


def test_best_arch_trains_with_train_py(tmp_path) -> None:
    """A timm student distils from a teacher, tests and exports like an nb201 one."""
    arch = tmp_path / "search" / "best_arch.json"
    arch.parent.mkdir()
    create_space("timm", family="resnet", depths=[1], widths=[4]).smallest().save(arch)
    argv = [*TINY, "--model.student", str(arch), "--baseline", "false", "--data.batch_size", "4",
            "--trainer.limit_test_batches", "1"]
    assert guarded(train.main, argv) == 0
    assert (arch.parent / "distill" / "results.json").is_file() and (arch.parent / "distill" / "student.onnx").is_file()
