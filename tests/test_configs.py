"""Every shipped search config parses to exactly what it says, and the quickstart applies only when asked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from das.data import DasDataModule
from das.proxies import PROXIES
from das.spaces import SPACES
from search import DEFAULT_RUN_DIR, build_parser, parse

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
SEARCH_CONFIGS = [QUICKSTART, *sorted((ROOT / "configs" / "search").glob("*.yaml"))]


def leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "args":  # space.args is one value, a dict
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("path", SEARCH_CONFIGS, ids=lambda p: p.name)
def test_search_config_resolves_to_what_it_says(path: Path) -> None:
    cfg = parse(build_parser(), ["--config", str(path)])
    written = leaves(yaml.safe_load(path.read_text()))
    assert written, path
    for key, value in written.items():
        assert cfg[key] == value, f"{path.name}: {key} is {cfg[key]!r}, the file says {value!r}"
    proxies = [cfg.study.objective, *cfg.study.report]
    for name in proxies:
        PROXIES.get(name)
    assert cfg.study.probe_batches >= max(PROXIES.get(n).min_batches for n in proxies)
    SPACES.get(cfg.space.name)
    if path != QUICKSTART:  # nothing of the quickstart leaks in: unset keys are the code's defaults
        defaults = parse(build_parser(), ["--teacher.spec", "resnet20"])
        for key in ("data.image_size", "data.augment", "space.args", "budget.max_params", "study.trials"):
            assert cfg[key] == (written[key] if key in written else defaults[key]), key


def test_cifar_configs_see_32x32_images(shared_data) -> None:
    for name in ("cifar10_resnet56", "cifar10_ensemble"):
        cfg = parse(build_parser(), ["--config", str(ROOT / "configs" / "search" / f"{name}.yaml")])
        assert cfg.data.image_size is None  # the dataset's own size
    # The 4,660-image file has the same 32×32 layout and loads in a fraction of the 50k's time.
    data = cfg.data.as_dict()
    data["train_file"], data["root"] = "train_exact_4660.npz", str(shared_data / "cifar10")
    assert DasDataModule(**data).input_shape == (3, 32, 32)


def test_the_quickstart_applies_only_to_commands_that_name_no_config_dataset_or_teacher(tmp_path) -> None:
    parser = build_parser()
    quick = parse(parser, [])
    assert (quick.run_dir, quick.data.image_size, quick.space.args, quick.budget.max_params, quick.study.trials) == (
        "runs/quickstart", 16, {"C": 8, "N": 1}, 40000, 60)
    more = parse(parser, ["--study.trials", "10"])
    assert (more.study.trials, more.space.args, more.run_dir) == (10, {"C": 8, "N": 1}, "runs/quickstart")

    own = parse(parser, ["--teacher.spec", "my_models.nets:big_cnn", "--data.dataset", "npz", "--run_dir", "runs/mine"])
    assert (own.run_dir, own.data.image_size, own.space.args, own.budget.max_params, own.study.trials) == (
        "runs/mine", None, {}, None, 100)  # {}: the space's own defaults
    assert parse(parser, ["--teacher.checkpoint=t.pt"]).space.args == {}
    assert parse(parser, ["--data.dataset", "cifar10"]).run_dir == DEFAULT_RUN_DIR

    bare = tmp_path / "mine.yaml"
    bare.write_text("study:\n  trials: 7\n")
    cfg = parse(parser, ["--config", str(bare)])
    assert (cfg.run_dir, cfg.study.trials, cfg.space.args) == ("runs/mine", 7, {})
    assert parse(parser, ["--config", str(bare), "--run_dir", "elsewhere"]).run_dir == "elsewhere"
