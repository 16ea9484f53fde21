"""Tiny inputs for the benchmark tests: a fake NB201 table, a fake CIFAR-like .npz, stand-in proxies.

The proxies registered here exist only for the duration of a test (the registry is patched and
restored), so other tests that parametrise over every registered proxy never see them. ``params``
and ``flops`` are the real das proxies when they are registered and a stand-in otherwise, so the
tests pass before and after the proxy suite lands.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from das.proxies import PROXIES
from das.proxies.base import Proxy
from das.spaces import create_space
from das.stats import count_flops, count_params
from tests.benchmarks.fakes import write_fake_cifar

@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    """Benchmarks set torch's thread count (``--threads``); put it back so other tests keep theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# (1x1 convs, 3x3 convs) = (0,0) (1,0) (2,0) (0,1) (1,1) (0,3): six different parameter counts.
ARCHS = [
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|skip_connect~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|avg_pool_3x3~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
]
TINY = ["--C", "4", "--N", "1"]


def tiny_params(arch: str) -> int:
    return count_params(create_space("nb201", C=4, N=1).spec(arch=arch).build(10))


@pytest.fixture
def fake_csv(tmp_path: Path) -> Path:
    """Six real arch strings; CIFAR-10 accuracy = the C=4/N=1 parameter count, the others made up."""
    path = tmp_path / "acc.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "arch", "cifar10_test_acc", "cifar100_test_acc", "imagenet16_120_test_acc", "isomorph_key"])
        for i, arch in enumerate(ARCHS):
            w.writerow([100 + i, arch, tiny_params(arch), 50.0 - 3 * i, 20.0 + (i % 3), "k"])
    return path


@pytest.fixture
def fake_npz(tmp_path: Path) -> Path:
    return write_fake_cifar(tmp_path / "probe.npz", 64)


@pytest.fixture
def register() -> Iterator[Callable[..., str]]:
    """Register a proxy for this test only: ``register(name, fn, min_batches=1)``."""

    def add(name: str, fn: Callable, min_batches: int = 1, needs_teacher: bool = False) -> str:
        if name in PROXIES:  # a test may replace a built-in proxy; the registry is restored afterwards
            PROXIES.unregister(name)
        PROXIES.add(name, Proxy(name, fn, needs_teacher, min_batches))
        return name

    with PROXIES.temporary():
        yield add


@pytest.fixture
def params_flops(register: Callable[..., str]) -> list[str]:
    """``params`` and ``flops``: das's own when registered, else stand-ins with the same meaning."""
    if "params" not in PROXIES:
        register("params", lambda ctx: float(count_params(ctx.model)))
    if "flops" not in PROXIES:
        register("flops", lambda ctx: float(count_flops(ctx.model, tuple(ctx.batches[0][0].shape[1:]))))
    return ["params", "flops"]


@pytest.fixture
def flaky(register: Callable[..., str]) -> Iterator[dict[str, list[str]]]:
    """Proxies that fail on some archs, and one that records every arch it scores.

    ``bench_raises`` raises on cells with an avg_pool edge, ``bench_nan`` returns NaN on cells
    with a ``none`` edge, ``bench_count`` returns the parameter count; the last two log the archs
    they score.
    """
    seen: dict[str, list[str]] = {"count": [], "nan": []}

    def raises(ctx) -> float:
        if "avg_pool_3x3" in ctx.model.arch:
            raise ValueError("pooling is not supported by this test proxy")
        return 1.0

    def nan(ctx) -> float:
        seen["nan"].append(ctx.model.arch)
        return math.nan if "none" in ctx.model.arch else float(count_params(ctx.model))

    def count(ctx) -> float:
        seen["count"].append(ctx.model.arch)
        return float(count_params(ctx.model))

    register("bench_raises", raises)
    register("bench_nan", nan)
    register("bench_count", count)
    yield seen


@pytest.fixture
def two_batch(register: Callable[..., str]) -> str:
    """A proxy that needs two probe batches and checks it got two different ones."""

    def fn(ctx) -> float:
        assert len(ctx.batches) == 2 and not torch.equal(ctx.batches[0][0], ctx.batches[1][0])
        return float(count_params(ctx.model))

    return register("bench_two", fn, min_batches=2)
