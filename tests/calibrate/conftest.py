"""Tiny populations for the calibrate tests: 64 random 16×16 images, NB201 students of width 4, a TinyNet teacher."""

from __future__ import annotations

import pytest
import torch

from das.calibrate import PopulationData, Recipe
from das.data.splits import ImageSplit
from das.spaces import create_space
from das.spec import ArchSpec
from tests.tinynets import TinyNet

ARCHS = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|",
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
)


def split(n: int, seed: int) -> ImageSplit:
    g = torch.Generator().manual_seed(seed)
    return ImageSplit(torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8), torch.randint(0, 10, (n,), generator=g))


@pytest.fixture(autouse=True)
def _no_cache_from_another_test(monkeypatch) -> None:
    """Each test builds its own teacher cache (the population module keeps the last one)."""
    from das.calibrate import population

    monkeypatch.setattr(population, "_last_cache", None)


@pytest.fixture(autouse=True)
def _one_thread(one_thread) -> None:
    """Every test here on one thread (the fixture is in tests/conftest.py)."""


@pytest.fixture
def data() -> PopulationData:
    return PopulationData(split(64, 0), split(32, 1), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 10)


@pytest.fixture
def teacher() -> TinyNet:
    torch.manual_seed(1)
    return TinyNet(width=16)


@pytest.fixture
def students() -> list[ArchSpec]:
    space = create_space("nb201", C=4, N=1)
    return [space.spec(arch=a) for a in ARCHS]


@pytest.fixture
def recipe() -> Recipe:
    """DistillModule's default losses and optimiser; 1 epoch of 4 batches."""
    return Recipe(epochs=1, batch_size=16)
