"""A user's define-by-run space (``package.module:function``): the trial's params become the spec,
the spec rebuilds the same network through a FixedTrial, space.args reach the function, a finite
function enumerates its branches, and every mistake fails in one line."""

from __future__ import annotations

import itertools
import pickle
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

from das.cli import guarded
from das.distill import command as train
from das.errors import DasError
from das.features import feature_points
from das.models import build_model
from das.search.checks import make_space
from das.search.config import BudgetConfig, SpaceConfig
from das.search.trial_objective import TrialObjective
from das.spaces import SPACES, SearchSpace, create_space
from das.spaces.user import UserSpace
from das.spec import ArchSpec
from tests.cli.test_train_cli import TINY

MODULE = "das_test_user_space_module"

SOURCE = '''
import torch
from torch import nn

DEVICES = []  # the device each call of `space` built on


def space(trial, num_classes=10, max_width=16):
    width = trial.suggest_categorical("width", [4, max_width])
    depth = trial.suggest_int("depth", 1, 2)
    layers, c = [], 3
    for _ in range(depth):
        layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
    DEVICES.append(net[-1].weight.device.type)
    return net


space.finite = True


def branchy(trial):
    """A conditional space: 'kernel' is asked only for conv blocks (3 + 1 = 4 members)."""
    kind = trial.suggest_categorical("kind", ["conv", "pool"])
    if kind == "conv":
        k = trial.suggest_categorical("kernel", [1, 3, 5])
        body = nn.Conv2d(3, 4, k, padding=k // 2)
    else:
        body = nn.Sequential(nn.AvgPool2d(3, 1, 1), nn.Conv2d(3, 4, 1))
    return nn.Sequential(body, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


branchy.finite = True


def continuous(trial):
    trial.suggest_float("dropout", 0.0, 0.5)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


continuous.finite = True


def not_a_module(trial):
    return {"width": trial.suggest_int("width", 1, 4)}


def item_on_meta(trial):
    """Reads a tensor's value while building, which the meta device cannot do."""
    n = int(torch.tensor([trial.suggest_int("width", 2, 3)]).item())
    return nn.Sequential(nn.Conv2d(3, n, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(n, 10))


def no_trial():
    return nn.Linear(2, 2)


def needs_width(trial, *, width):
    trial.suggest_categorical("act", ["relu"])
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


NOT_CALLABLE = 3
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / f"{MODULE}.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)  # this test's file, not an earlier one
    return MODULE


def shapes(model: nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in model.state_dict().items()}


def sample(space: UserSpace, seed: int = 0) -> tuple[ArchSpec, dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    return space.suggest(trial), trial.params


def test_trial_params_are_the_spec_and_rebuild_the_network(user_module: str) -> None:
    space = create_space(f"{user_module}:space")
    assert isinstance(space, UserSpace) and space.name == f"{user_module}:space"
    spec, params = sample(space)
    assert spec.space == space.name and dict(spec.choices) == params and set(params) == {"width", "depth"}
    model = space.build(spec, num_classes=7)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == params["depth"] and {c.out_channels for c in convs} == {params["width"]}
    out = model(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    # Through JSON, ArchSpec.build and build_model (what train.py and a resumed search use).
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec and hash(again) == hash(spec)
    for rebuilt in (again.build(7), build_model(again, 7), build_model(spec.to_json(), 7)):
        assert shapes(rebuilt) == shapes(model)
    # It declares no feature points, so das infers the final map and the classifier.
    points = feature_points(model, torch.zeros(2, 3, 8, 8))
    assert [(p.role, p.channels) for p in points] == [("final", params["width"]), ("logits", 7)]


def test_every_member_rebuilds_the_network_it_sampled(user_module: str) -> None:
    space = create_space(f"{user_module}:space")
    seen = set()
    for seed in range(6):
        spec, params = sample(space, seed)
        seen.add((params["width"], params["depth"]))
        net = ArchSpec.from_json(spec.to_json()).build(10)
        assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == params["depth"]
        assert net[-1].in_features == params["width"]
    assert len(seen) > 1  # the draws differ, so the rebuilds above are not one network


def test_sampling_builds_on_meta_and_falls_back_when_it_cannot(user_module: str) -> None:
    space = create_space(f"{user_module}:space")
    devices = sys.modules[user_module].DEVICES
    spec, _ = sample(space)
    assert devices == ["meta"]  # sampling allocated nothing
    space.build(spec, 10)
    assert devices == ["meta", "cpu"]
    fallback = create_space(f"{user_module}:item_on_meta")
    spec, params = sample(fallback)
    assert fallback.build(spec, 10)[0].out_channels == params["width"]


def test_space_args_reach_the_function_and_the_spec(user_module: str) -> None:
    space, full = make_space(SpaceConfig(name=f"{user_module}:space", args={"max_width": 8}))
    assert full == {"max_width": 8} and dict(space.space_args) == {"max_width": 8}
    widths = {sample(space, seed)[1]["width"] for seed in range(8)}
    assert widths == {4, 8}
    spec = space.spec(width=8, depth=1)
    assert dict(ArchSpec.from_json(spec.to_json()).space_args) == {"max_width": 8}
    assert ArchSpec.from_json(spec.to_json()).build(10)[0].out_channels == 8
    # Defaults are filled in, as for a registered space, so {} and the defaults are one space.
    assert make_space(SpaceConfig(name=f"{user_module}:space"))[1] == {"max_width": 16}
    with pytest.raises(DasError, match=r"unknown key 'max_widht' .*did you mean 'max_width'"):
        make_space(SpaceConfig(name=f"{user_module}:space", args={"max_widht": 8}))
    with pytest.raises(DasError, match=r"\['depth'\] are not arguments of .*accepted: max_width"):
        create_space(f"{user_module}:space", depth=3)
    with pytest.raises(DasError, match=r"needs space.args \['width'\], which have no default"):
        create_space(f"{user_module}:needs_width")
    assert create_space(f"{user_module}:needs_width", width=3).build(ArchSpec.make(f"{user_module}:needs_width", {"act": "relu"}, {"width": 3}), 10)[0].out_channels == 3


def test_finite_only_when_the_function_says_so_and_enumerate_walks_every_branch(user_module: str) -> None:
    space = create_space(f"{user_module}:space")
    assert space.finite is True
    specs = list(space.enumerate())
    assert {tuple(sorted(dict(s.choices).items())) for s in specs} == {
        (("depth", d), ("width", w)) for w, d in itertools.product((4, 16), (1, 2))
    }
    assert len(specs) == 4
    branchy = create_space(f"{user_module}:branchy")
    assert [dict(s.choices) for s in branchy.enumerate()] == [
        {"kind": "conv", "kernel": 1}, {"kind": "conv", "kernel": 3}, {"kind": "conv", "kernel": 5}, {"kind": "pool"},
    ]
    for spec in branchy.enumerate():
        assert branchy.build(spec, 10)(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    unmarked = create_space(f"{user_module}:item_on_meta")
    assert unmarked.finite is False
    with pytest.raises(DasError, match="is not finite; set item_on_meta.finite = True"):
        next(unmarked.enumerate())
    unmarked.function.finite = True  # a function that cannot run on meta enumerates too
    assert [dict(s.choices) for s in unmarked.enumerate()] == [{"width": 2}, {"width": 3}]
    with pytest.raises(DasError, match="'dropout' is continuous"):
        list(create_space(f"{user_module}:continuous").enumerate())


def test_scores_with_the_search_objective_and_pickles(user_module: str, one_thread) -> None:
    space = create_space(f"{user_module}:space")
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g))
    objective = TrialObjective(space, [batch], None, ["params", "snip"], BudgetConfig(), 10, (3, 8, 8), torch.device("cpu"))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=3)
    for trial in study.trials:
        spec = ArchSpec.from_json(trial.user_attrs["arch"])
        assert dict(spec.choices) == trial.params
        assert trial.value == sum(p.numel() for p in spec.build(10).parameters())
        assert trial.user_attrs["scores"]["snip"] > 0
    copy = pickle.loads(pickle.dumps(space))  # e.g. to a spawned worker
    assert copy.name == space.name and shapes(copy.build(space.spec(width=4, depth=2), 3)) == shapes(
        space.build(space.spec(width=4, depth=2), 3)
    )


@pytest.mark.parametrize(
    "name, words",
    [
        ("das_no_such_module_xyz:space", ["cannot import 'das_no_such_module_xyz'", "PYTHONPATH"]),
        ("{module}:spcae", ["has no 'spcae'", "did you mean 'space'"]),
        ("{module}:NOT_CALLABLE", ["is a int", "takes an Optuna trial"]),
        ("{module}:no_trial", ["must take an Optuna trial as its first argument"]),
        ("{module}:", ["is not package.module:function"]),
        ("nb2O1", ["unknown search space 'nb2O1'", "did you mean 'nb201'", "package.module:function"]),
    ],
)
def test_bad_names_fail_in_one_line(user_module: str, name: str, words: list[str]) -> None:
    with pytest.raises(DasError) as info:
        create_space(name.format(module=user_module))
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_a_function_that_returns_no_module_fails_in_one_line(user_module: str) -> None:
    space = create_space(f"{user_module}:not_a_module")
    with pytest.raises(DasError, match=r"^space function '.*:not_a_module' returned a dict, not a torch.nn.Module; return the network$"):
        sample(space)


@pytest.mark.parametrize(
    "choices, words",
    [
        ({"width": 4}, ["asks for param 'depth'", "lack (they have width)"]),
        ({"width": 4, "depth": 1, "stride": 2}, ["did not ask for 'stride'"]),
        ({"width": 4, "depth": 7}, ["'depth' in IntDistribution(high=2", "depth=7"]),
        ({"width": 5, "depth": 1}, ["'width'", "width=5"]),
    ],
)
def test_specs_that_do_not_fit_the_function_fail_in_one_line(user_module: str, choices: dict, words: list[str]) -> None:
    spec = ArchSpec.make(f"{user_module}:space", choices, {"max_width": 16})
    with pytest.raises(DasError) as info:
        spec.build(10)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_every_space_states_whether_it_is_finite(user_module: str) -> None:
    assert all(isinstance(SPACES.get(name).finite, bool) for name in SPACES.names())
    assert {name: SPACES.get(name).finite for name in ("nb201", "resnet_cifar", "timm")} == dict.fromkeys(("nb201", "resnet_cifar", "timm"), True)
    assert SearchSpace.finite is False  # a space is not finite unless it says so
    assert create_space(f"{user_module}:not_a_module").finite is False


def test_best_arch_trains_with_train_py(user_module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.py rebuilds the user's network from best_arch.json (ONNX export is the timm test's concern)."""
    import das.distill.command as command

    def no_export(*_args, **_kwargs):
        raise RuntimeError("skipped in this test")

    monkeypatch.setattr(command, "export_onnx", no_export)
    arch = tmp_path / "search" / "best_arch.json"
    arch.parent.mkdir()
    create_space(f"{user_module}:space").spec(width=4, depth=2).save(arch)
    argv = [*TINY, "--model.student", str(arch), "--baseline", "false", "--data.batch_size", "4",
            "--trainer.limit_test_batches", "1"]
    assert guarded(train.main, argv) == 0
    results = arch.parent / "distill" / "student.pt"
    saved = torch.load(results, weights_only=False)
    assert saved["student_spec"]["space"] == f"{user_module}:space"
    rebuilt = ArchSpec.from_dict(saved["student_spec"]).build(10)
    rebuilt.load_state_dict(saved["state_dict"], strict=True)
