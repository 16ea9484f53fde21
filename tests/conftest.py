"""Shared fixtures: a fixed seed, few threads, and the path to ../shared/data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from das.paths import shared_data_dir


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny training runs gain nothing from threads, and on a
    loaded 2-core machine two OpenMP threads wait on each other (measured ~5× slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (or $DAS_DATA); tests that need it skip with the reason when it is absent."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set DAS_DATA to a copy of shared/data)")
    return root


torch.set_num_threads(min(2, os.cpu_count() or 1))
