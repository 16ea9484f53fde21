"""The resnet_cifar space: specs build and round-trip, (3, 3, 3) at width 1 is the built-in ResNet-20
(parameters, state_dict and outputs), shortcuts follow the stated rule, and a best_arch.json of it
trains with train.py."""

from __future__ import annotations

import json
import re

import optuna
import pytest
import torch
from torch import nn

from das.distill import command as train
from das.cli import guarded
from das.errors import DasError
from das.features import FeatureTap, feature_points
from das.models import build_model
from das.nets.cifar_resnet import PadShortcut
from das.spaces import SPACES, create_space
from das.spaces.resnet_cifar import ResNetCifarSpace, stage_widths
from das.spec import ArchSpec
from teachers import create_teacher
from tests.cli.test_train_cli import TINY

RESNET20 = {"blocks": [3, 3, 3], "width": [1.0, 1.0, 1.0]}
RESNET20_PARAMS = 269_722  # He et al.'s 0.27M; 272,474 is the option-B (1×1 projection) variant
# Stage 1 at 1.5 (24 ch) feeds stage 2 at 0.5 (16 ch): the one kind of shortcut option A cannot make.
NARROWING = {"blocks": [1, 3, 1], "width": [1.5, 0.5, 1.25]}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def space() -> ResNetCifarSpace:
    return create_space("resnet_cifar")


def test_registered() -> None:
    assert SPACES.get("resnet_cifar") is ResNetCifarSpace


def test_resnet20_is_the_builtin_teacher(space: ResNetCifarSpace) -> None:
    model = space.build(space.spec(**RESNET20), 10)
    teacher = create_teacher("resnet20", num_classes=10)
    assert count(model) == count(teacher) == RESNET20_PARAMS
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in teacher.state_dict().items()}
    model.load_state_dict(teacher.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), teacher.eval()(x), rtol=0, atol=0)
    assert model.feature_points() == teacher.feature_points()


def test_public_resnet20_checkpoint_loads_strictly(space: ResNetCifarSpace, shared_data, tmp_path) -> None:
    checkpoint = shared_data / "teachers" / "cifar10_resnet20.th"
    if not checkpoint.is_file():
        pytest.skip(f"{checkpoint} not found")
    arch = tmp_path / "best_arch.json"
    space.spec(**RESNET20).save(arch)
    model = build_model(str(arch), 10, checkpoint=str(checkpoint))
    torch.testing.assert_close(model.state_dict(), create_teacher("resnet20", checkpoint=str(checkpoint)).state_dict())


@pytest.mark.parametrize(
    "choices",
    [RESNET20, NARROWING, {"blocks": [1, 1, 1], "width": [0.5, 0.5, 0.5]}, {"blocks": [7, 1, 5], "width": [0.75, 1.25, 1.0]}],
    ids=["resnet20", "narrowing", "smallest", "mixed"],
)
def test_forward_shape_and_feature_points(space: ResNetCifarSpace, choices: dict) -> None:
    model = space.build(space.spec(**choices), num_classes=7)
    widths = stage_widths(16, choices["width"])
    assert [len(stage) for stage in (model.layer1, model.layer2, model.layer3)] == choices["blocks"]
    points = feature_points(model)
    # As the built-in teachers declare them: layer3 is the last stage and the map the classifier pools.
    assert [(p.module, p.role) for p in points] == [
        ("layer1", "stage"), ("layer2", "stage"), ("layer3", "final"), ("linear", "logits")
    ]
    assert [p.channels for p in points] == [*widths, 7]
    with FeatureTap(model, [p.module for p in points]) as tap:
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    for p in points:
        got = tap.outputs[p.module]
        assert got.shape[1] == p.channels
        if p.role != "logits":
            assert got.shape[-1] == 32 // p.reduction


def test_shortcuts_pad_where_they_can_and_project_only_where_a_stage_narrows(space: ResNetCifarSpace) -> None:
    model = space.build(space.spec(**NARROWING), 10)
    assert stage_widths(16, NARROWING["width"]) == (24, 16, 80)
    assert model.conv1.out_channels == 24  # the stem follows stage 1, so layer1 keeps identity shortcuts
    assert isinstance(model.layer1[0].shortcut, nn.Identity)
    narrowing = model.layer2[0].shortcut  # 24 -> 16: a 1×1 conv + BN, stride 2 (option B)
    assert isinstance(narrowing, nn.Sequential) and narrowing[0].kernel_size == (1, 1) and narrowing[0].stride == (2, 2)
    assert isinstance(model.layer3[0].shortcut, PadShortcut)  # 16 -> 80: zero-padding (option A)
    plain = space.build(space.spec(blocks=[1, 3, 1], width=[1.5, 0.75, 1.25]), 10)  # 24 -> 24 -> 80: no projection
    assert isinstance(plain.layer2[0].shortcut, PadShortcut)
    assert count(narrowing) == 24 * 16 + 2 * 16  # the only shortcut with parameters
    assert count(model.layer3[0].shortcut) == count(plain.layer2[0].shortcut) == 0


def test_width_rounding() -> None:
    assert stage_widths(16, (0.5, 0.75, 1.5)) == (8, 24, 96)
    assert stage_widths(10, (0.75, 0.75, 0.75)) == (8, 15, 30)  # 7.5 rounds half up
    assert stage_widths(1, (0.25, 0.25, 0.25)) == (1, 1, 1)  # never below one channel


def test_spec_json_round_trip(space: ResNetCifarSpace, tmp_path) -> None:
    spec = space.spec(blocks=(7, 1, 5), width=(0.75, 1.25, 1))  # 1 is written as 1.0
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec and hash(again) == hash(spec) and str(again) == "resnet_cifar(blocks=(7, 1, 5),width=(0.75, 1.25, 1.0))"
    assert dict(again.space_args) == {"C": 16, "depths": (1, 3, 5, 7), "multipliers": (0.5, 0.75, 1.0, 1.25, 1.5)}
    a, b = space.build(spec, 10), again.build(10)
    assert count(a) == count(b)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    # A search's best_arch.json (the spec plus its scores) is what train.py builds students from.
    arch = tmp_path / "best_arch.json"
    spec.save(arch, search={"diswot": -1.0, "params": count(a)})
    assert count(build_model(str(arch), 10)) == count(a) == json.loads(arch.read_text())["search"]["params"]


def test_suggest_with_optuna(space: ResNetCifarSpace) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        spec = space.suggest(trial)
        assert spec.space == "resnet_cifar"
        assert set(trial.params) == {f"stage{s}_{k}" for s in (1, 2, 3) for k in ("blocks", "width")}
        assert spec.choice("blocks") == tuple(trial.params[f"stage{s}_blocks"] for s in (1, 2, 3))
        assert spec.choice("width") == tuple(trial.params[f"stage{s}_width"] for s in (1, 2, 3))
        assert space.canonical(spec) == spec.to_json()
        study.tell(trial, 0.0)
    tiny = create_space("resnet_cifar", C=2)
    assert tiny.build(tiny.suggest(study.ask()), 10)(torch.randn(1, 3, 8, 8)).shape == (1, 10)


def test_enumerate(space: ResNetCifarSpace) -> None:
    specs = list(space.enumerate())
    assert len(specs) == space.size == 4**3 * 5**3 == 8000
    assert len(set(specs)) == len({space.canonical(s) for s in specs}) == 8000  # no isomorphs
    assert specs[0] == space.smallest() and specs[-1] == space.largest()
    depth_only = create_space("resnet_cifar", multipliers=[1.0])  # the authors' space: widths 16/32/64
    assert depth_only.size == len(list(depth_only.enumerate())) == 64


def test_parameter_range(space: ResNetCifarSpace) -> None:
    """The README's range: every other member lies between these (fewer blocks and narrower stages have fewer parameters)."""
    assert count(space.build(space.smallest(), 10)) == 19_218
    assert count(space.build(space.largest(), 10)) == 1_478_626


@pytest.mark.parametrize(
    "choices, words",
    [
        ({"blocks": [3, 3, 3]}, ["two choices", "width"]),
        ({"blocks": [3, 3], "width": [1, 1, 1]}, ["one value per stage"]),
        ({"blocks": [3, 4, 3], "width": [1, 1, 1]}, ["4", "1, 3, 5, 7"]),
        ({"blocks": [3, 3, 3], "width": [1, 2, 1]}, ["2", "0.5, 0.75"]),
        ({"blocks": "333", "width": [1, 1, 1]}, ["one value per stage"]),
    ],
)
def test_bad_choices(space: ResNetCifarSpace, choices: dict, words: list[str]) -> None:
    with pytest.raises(DasError) as info:
        space.spec(**choices)
    assert "\n" not in str(info.value) and all(w in str(info.value) for w in words)
    # A hand-made spec bypasses spec(); build must still refuse it.
    with pytest.raises(DasError):
        ArchSpec.make("resnet_cifar", choices, {"C": 4}).build(10)


@pytest.mark.parametrize(
    "kwargs", [{"C": 0}, {"C": True}, {"depths": []}, {"depths": [1, 2.5]}, {"multipliers": [1, 1]}, {"multipliers": [-0.5]}]
)
def test_bad_space_args(kwargs: dict) -> None:
    with pytest.raises(DasError, match=re.escape(repr(next(iter(kwargs.values()))))):
        create_space("resnet_cifar", **kwargs)


def test_best_arch_trains_with_train_py(tmp_path) -> None:
    """A search result of this space trains, tests and exports (student.onnx) like an nb201 one."""
    arch = tmp_path / "search" / "best_arch.json"
    arch.parent.mkdir()
    create_space("resnet_cifar", C=4).spec(**NARROWING).save(arch)
    argv = [*TINY, "--model.student", str(arch), "--model.teacher", "null", "--baseline", "false",
            "--trainer.limit_test_batches", "1"]
    assert guarded(train.main, argv) == 0
    assert (arch.parent / "distill" / "results.json").is_file() and (arch.parent / "distill" / "student.onnx").is_file()
