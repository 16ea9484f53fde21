"""benchmarks/lightning_overhead.py on a tiny fake CIFAR file and an untrained ResNet-56: the JSON it documents."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from benchmarks import lightning_overhead
from das.errors import DasError
from tests.benchmarks.fakes import save_random_teacher, write_fake_cifar


@pytest.fixture
def tiny(tmp_path: Path) -> list[str]:
    """A 96-image train npz and an untrained ResNet-56 saved as "the teacher"."""
    write_fake_cifar(tmp_path / "train.npz", 96)
    save_random_teacher(tmp_path / "teacher.th", "resnet56")
    return ["--train-file", str(tmp_path / "train.npz"), "--teacher-checkpoint", str(tmp_path / "teacher.th"),
            "--batches", "3", "--repeats", "2", "--batch-size", "8", "--threads", "1", "--out", str(tmp_path / "out.json")]


def test_both_paths_do_the_same_work_and_the_json_reports_medians_and_ratio(tiny: list[str], tmp_path: Path) -> None:
    assert lightning_overhead.main(tiny) == 0
    result = json.loads((tmp_path / "out.json").read_text())
    medians = {}
    for path in ("plain", "lightning"):
        runs = result["images_per_s"][path]["rounds"]
        assert len(runs) == 2 and all(r["images_per_s"] > 0 and r["steady_images_per_s"] > 0 for r in runs)
        medians[path] = result["images_per_s"][path]["median"]
        assert medians[path] == pytest.approx(statistics.median(r["images_per_s"] for r in runs))
    assert result["ratio"] == pytest.approx(medians["lightning"] / medians["plain"])
    assert result["overhead_percent"] == pytest.approx(100 * (1 - result["ratio"]))
    assert result["meets_goal"] == (result["ratio"] >= 0.95)
    assert result["same_last_loss"]  # same seed, data, losses and optimiser: the same last loss in every round
    settings = result["settings"]
    assert settings["warmup"] == 1 and settings["timed_images_per_round"] == 2 * 8 and settings["subset_images"] >= 3 * 8
    for key in ("load_average_start", "load_average_end", "machine", "code", "date", "threads", "workers"):
        assert key in settings


def test_settings_that_time_nothing_are_refused_in_one_line(tiny: list[str]) -> None:
    with pytest.raises(DasError, match="--warmup 3 must be") as err:
        lightning_overhead.main([*tiny, "--warmup", "3"])
    assert "\n" not in str(err.value)
