"""NAS-Bench-201 space: arch strings, the network, its feature contract, and agreement with the
benchmark's own data (parameter counts from NASLib, isomorphism keys from the accuracy table)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from das.errors import DasError
from das.features import FeatureTap, feature_points
from das.spaces import SPACES, create_space
from das.spaces.nb201 import (
    EDGES,
    NB201Space,
    arch_string,
    from_naslib_tuple,
    isomorph_key,
    parse_arch,
    to_naslib_tuple,
)
from das.spec import ArchSpec

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
ALL_OPS = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
NONE = arch_string(["none"] * 6)


@pytest.fixture
def tiny() -> NB201Space:
    return create_space("nb201", C=4, N=1)


def test_registered() -> None:
    assert "nb201" in SPACES
    assert SPACES.get("nb201") is NB201Space


def test_arch_string_round_trip() -> None:
    ops = parse_arch(ARCH)
    assert ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect")
    assert arch_string(ops) == ARCH


@pytest.mark.parametrize(
    "bad, words",
    [
        ("|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", ["nor_conv_5x5", "accepted ops"]),
        ("|none~0|+|none~0|none~1|", ["3"]),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", ["node 2", "expected 2"]),
        ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", ["none~1", "op~0"]),
        ("none~0+|none~0|none~1|+|none~0|none~1|none~2|", ["'|'"]),
        ("", ["expected 3"]),
    ],
)
def test_bad_arch_strings(bad: str, words: list[str]) -> None:
    with pytest.raises(DasError) as info:
        parse_arch(bad)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_bad_arch_in_spec_and_build(tiny: NB201Space) -> None:
    with pytest.raises(DasError, match="skip_conect"):
        tiny.spec(arch=ARCH.replace("skip_connect", "skip_conect"))
    # A hand-made spec bypasses spec(); build must still refuse it.
    spec = ArchSpec.make("nb201", {"arch": "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|"}, {"C": 4, "N": 1})
    with pytest.raises(DasError, match="accepted ops"):
        spec.build(10)


@pytest.mark.parametrize("kwargs", [{"C": 0}, {"N": -1}, {"C": 2.5}, {"N": "5"}, {"C": True}])
def test_bad_space_args(kwargs: dict) -> None:
    with pytest.raises(DasError, match=re.escape(repr(next(iter(kwargs.values()))))):
        create_space("nb201", **kwargs)


@pytest.mark.parametrize("arch", [ARCH, ALL_OPS])
def test_forward_shape_and_features(tiny: NB201Space, arch: str) -> None:
    model = tiny.build(tiny.spec(arch=arch), num_classes=7)
    x = torch.randn(2, 3, 16, 16)
    points = feature_points(model)
    assert [p.role for p in points] == ["stage", "stage", "stage", "final", "logits"]
    with FeatureTap(model, [p.module for p in points]) as tap:
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)
    assert torch.isfinite(out).all()
    for p in points:
        got = tap.outputs[p.module]
        assert got.shape[1] == p.channels
        if p.role != "logits":
            assert got.shape[-1] == 16 // p.reduction
    assert [p.channels for p in points] == [4, 8, 16, 16, 7]
    assert [p.reduction for p in points] == [1, 2, 4, 4, 1]


def test_feature_points_with_more_cells() -> None:
    space = create_space("nb201", C=2, N=3)
    model = space.build(space.spec(arch=ARCH), num_classes=3)
    names = dict(model.named_modules())
    stages = [p.module for p in model.feature_points() if p.role == "stage"]
    assert stages == ["cells.2", "cells.6", "cells.10"]
    # Each stage point is the last cell before a reduction block (or the end).
    assert type(names["cells.3"]).__name__ == "ResNetBlock" and type(names["cells.7"]).__name__ == "ResNetBlock"
    assert len(model.cells) == 11


def test_spec_json_round_trip(tiny: NB201Space) -> None:
    spec = tiny.spec(arch=ARCH)
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec and hash(again) == hash(spec)
    assert dict(again.space_args) == {"C": 4, "N": 1}
    a = tiny.build(spec, 10).state_dict()
    b = again.build(10).state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def test_suggest_with_optuna(tiny: NB201Space) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    spec = tiny.suggest(trial)
    assert spec.space == "nb201"
    assert set(trial.params) == {f"edge_{t}<-{s}" for t, s in EDGES}
    assert parse_arch(spec.choice("arch")) == tuple(trial.params[f"edge_{t}<-{s}"] for t, s in EDGES)
    assert tiny.build(spec, 10)(torch.randn(1, 3, 8, 8)).shape == (1, 10)


def test_enumerate(tiny: NB201Space) -> None:
    specs = list(tiny.enumerate())
    assert len(specs) == 5**6 == 15625
    assert len(set(specs)) == 15625
    assert specs == list(tiny.enumerate())  # deterministic
    assert specs[0].choice("arch") == NONE


def test_all_none_output_ignores_input(tiny: NB201Space) -> None:
    model = tiny.build(tiny.spec(arch=NONE), num_classes=5)
    a, b = model(torch.randn(3, 3, 8, 8)), model(10 * torch.randn(3, 3, 8, 8))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[0], model.classifier.bias.detach())


def test_smallest_has_no_cell_parameters(tiny: NB201Space) -> None:
    counts = {
        a: sum(p.numel() for p in tiny.build(tiny.spec(arch=a), 10).parameters())
        for a in (tiny.smallest().choice("arch"), NONE, ARCH)
    }
    assert counts[tiny.smallest().choice("arch")] == counts[NONE] < counts[ARCH]


def test_canonical_merges_isomorphs(tiny: NB201Space) -> None:
    # Node 3 sums the same two convs of the input, once directly and once through node 1.
    f = "|nor_conv_1x1~0|+|none~0|none~1|+|nor_conv_3x3~0|skip_connect~1|none~2|"
    g = "|nor_conv_3x3~0|+|none~0|none~1|+|nor_conv_1x1~0|skip_connect~1|none~2|"
    assert tiny.canonical(tiny.spec(arch=f)) == tiny.canonical(tiny.spec(arch=g))
    # The output ignores node 1, so node 1's op does not matter.
    d = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|none~1|skip_connect~2|"
    e = "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|none~1|skip_connect~2|"
    assert tiny.canonical(tiny.spec(arch=d)) == tiny.canonical(tiny.spec(arch=e))
    # Composing the same ops in another order is another function.
    a = "|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|none~1|skip_connect~2|"
    b = "|nor_conv_1x1~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|"
    assert tiny.canonical(tiny.spec(arch=a)) != tiny.canonical(tiny.spec(arch=b))
    assert tiny.canonical(tiny.spec(arch=a)) == isomorph_key(a) == "#+#+((0)@nor_conv_3x3)@nor_conv_1x1+(0)@avg_pool_3x3"
    keys = {tiny.canonical(s) for s in tiny.enumerate()}
    assert 1 < len(keys) < 15625


def test_naslib_tuple_conversion() -> None:
    # NASLib orders edges (1<-0, 2<-0, 3<-0, 2<-1, 3<-1, 3<-2) and numbers ops differently.
    assert from_naslib_tuple((0, 2, 3, 2, 3, 1)) == (
        "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_1x1~0|nor_conv_1x1~1|none~2|"
    )
    assert from_naslib_tuple("(0, 2, 3, 2, 3, 1)") == from_naslib_tuple([0, 2, 3, 2, 3, 1])
    assert to_naslib_tuple(from_naslib_tuple((4, 0, 4, 1, 2, 0))) == (4, 0, 4, 1, 2, 0)
    for bad in [(0, 1), (0, 1, 2, 3, 4, 5), "nonsense"]:
        with pytest.raises(DasError):
            from_naslib_tuple(bad)


# ----------------------------------------------------------------- against the benchmark's data


def _naslib(shared_data: Path) -> dict:
    return json.loads((shared_data / "nb201" / "naslib_zc_nasbench201.json").read_text())


@pytest.mark.parametrize(
    "dataset, num_classes, key",
    [
        ("cifar10", 10, "(0, 2, 3, 2, 3, 1)"),
        ("cifar10", 10, "(4, 0, 4, 1, 2, 0)"),
        ("cifar100", 100, None),
        ("ImageNet16-120", 120, None),
    ],
)
def test_params_match_naslib(shared_data: Path, dataset: str, num_classes: int, key: str | None) -> None:
    """The full C=16, N=5 network has exactly the benchmark's parameter count (NASLib, in millions)."""
    data = _naslib(shared_data)[dataset]
    key = key or sorted(data)[0]
    space = create_space("nb201")  # benchmark defaults
    model = space.build(space.spec(arch=from_naslib_tuple(key)), num_classes)
    params = sum(p.numel() for p in model.parameters())
    assert params == round(data[key]["params"]["score"] * 1e6)


def test_naslib_edge_order_matches_accuracies(shared_data: Path) -> None:
    """NASLib's validation accuracy tracks the table's test accuracy only under the right edge order."""
    data = _naslib(shared_data)["cifar10"]
    with open(shared_data / "nb201" / "nb201_accuracy.csv", newline="") as f:
        test_acc = {row["arch"]: float(row["cifar10_test_acc"]) for row in csv.DictReader(f)}
    pairs = [
        (v["val_accuracy"], test_acc[a])
        for k, v in data.items()
        if (a := from_naslib_tuple(k)) in test_acc
    ]
    assert len(pairs) > 100
    # 0.986 measured; the best wrong edge order reaches 0.954.
    assert np.corrcoef(np.array(pairs).T)[0, 1] > 0.97


def test_canonical_reproduces_benchmark_keys(shared_data: Path) -> None:
    """Every row's isomorph_key is reproduced exactly (0.1 s for all 11,719 rows)."""
    space = create_space("nb201")
    with open(shared_data / "nb201" / "nb201_accuracy.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) > 1000
    for row in rows:
        assert space.canonical(space.spec(arch=row["arch"])) == row["isomorph_key"], row["arch"]
