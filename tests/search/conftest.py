"""Fixtures for searches of a few seconds: a saved teacher, the toy space registered, a counting proxy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from das.proxies import PROXIES, Proxy
from das.spaces import SPACES
from das.stats import count_params
from tests.tinynets import TinyNet
from tests.tinysearch import ToySpace


@pytest.fixture
def toy() -> Iterator[type[ToySpace]]:
    with SPACES.registered("toy", ToySpace):
        yield ToySpace


@pytest.fixture
def counting() -> Iterator[list[int]]:
    """A proxy ``counting`` (its score: the model's parameters) that records the parameters of every model passed to it."""
    calls: list[int] = []

    def fn(ctx) -> float:
        calls.append(count_params(ctx.model))
        return float(calls[-1])

    with PROXIES.registered("counting", Proxy("counting", fn)):
        yield calls


@pytest.fixture
def teacher_ckpt(tmp_path) -> str:
    """A TinyNet teacher checkpoint, so no search here trains a teacher."""
    path = tmp_path / "teacher.pt"
    torch.save(TinyNet().state_dict(), path)
    return str(path)
