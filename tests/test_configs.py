"""Every shipped search config parses, and names registered proxies, spaces and enough batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from das.proxies import PROXIES
from das.spaces import SPACES
from search import build_parser

ROOT = Path(__file__).resolve().parent.parent
SEARCH_CONFIGS = [ROOT / "configs" / "quickstart.yaml", *sorted((ROOT / "configs" / "search").glob("*.yaml"))]


@pytest.mark.parametrize("path", SEARCH_CONFIGS, ids=lambda p: p.name)
def test_search_config_is_valid(path: Path) -> None:
    cfg = build_parser().parse_args(["--config", str(path)])
    proxies = [cfg.study.objective, *cfg.study.report]
    for name in proxies:
        PROXIES.get(name)
    assert cfg.study.probe_batches >= max(PROXIES.get(n).min_batches for n in proxies)
    SPACES.get(cfg.space.name)
