"""Checkpoints a run can resume from, the run directory rules, and the distilled-vs-alone rule."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from das.data import DasDataModule
from das.distill import DistillModule
from das.distill.compare import compare, likely_causes, seed_noise, verdict
from das.distill.fit import check_writable, make_trainer, resolve_resume, run_root
from das.errors import DasError

NET = "tests.tinynets:TinyNet"


class FlatValidation(DistillModule):
    """Validation accuracy never improves after the first epoch: the case where last.ckpt went stale."""

    def validation_step(self, batch, _idx) -> None:
        self.log("val/acc", 0.5)


def fit(root: Path, epochs: int) -> None:
    module = FlatValidation(student=NET, input_size=(3, 8, 8))
    data = DasDataModule(dataset="digits", image_size=8, batch_size=32, augment=[])
    make_trainer(root, epochs, accelerator="cpu", progress=False, limit_train_batches=1, limit_val_batches=1,
                 num_sanity_val_steps=0).fit(module, datamodule=data)


def test_last_ckpt_is_the_last_epoch_even_when_validation_stops_improving(tmp_path) -> None:
    fit(tmp_path, 3)
    ckpts = tmp_path / "checkpoints"
    assert torch.load(ckpts / "best.ckpt", weights_only=True)["epoch"] == 0
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["epoch"] == 2  # Lightning's save_last gave 0
    fit(tmp_path, 1)  # a rerun in the same root overwrites, no last-v1.ckpt
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_the_run_root_is_explicit_or_next_to_the_searched_student(tmp_path) -> None:
    arch = tmp_path / "search" / "best_arch.json"
    arch.parent.mkdir()
    arch.write_text("{}")
    assert run_root(None, str(arch)) == arch.parent / "distill"
    assert run_root(str(tmp_path / "mine"), str(arch)) == tmp_path / "mine"
    assert run_root(str(tmp_path / "mine"), "resnet20") == tmp_path / "mine"
    with pytest.raises(DasError, match="default_root_dir"):
        run_root(None, "resnet20")
    with pytest.raises(DasError, match="nope.json"):
        run_root(str(tmp_path), str(tmp_path / "nope.json"))


def test_a_leaderboard_row_student_writes_next_to_its_leaderboard(tmp_path) -> None:
    board = tmp_path / "search" / "leaderboard.csv"
    board.parent.mkdir()
    board.write_text("rank,trial,arch\n")
    assert run_root(None, f"{board}#3") == board.parent / "distill-rank3"  # never best_arch.json's distill/
    assert run_root(str(tmp_path / "mine"), f"{board}#3") == tmp_path / "mine"
    with pytest.raises(DasError, match="leaderboard .*nope.csv.* does not exist") as err:
        run_root(None, str(tmp_path / "nope.csv#1"))
    assert "\n" not in str(err.value)


def test_last_resolves_in_this_root_only(tmp_path) -> None:
    with pytest.raises(DasError, match="last.ckpt"):
        resolve_resume("last", tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resolve_resume("last", tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")
    assert resolve_resume(None, tmp_path) is None
    with pytest.raises(DasError, match="not a file"):
        resolve_resume(str(tmp_path / "x.ckpt"), tmp_path)


def test_an_unwritable_run_dir_is_refused(tmp_path) -> None:
    if os.geteuid() == 0:  # root ignores permission bits; sysfs refuses even root
        bad = Path("/sys/das-fit-test")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        bad = locked / "run"
    with pytest.raises(DasError, match="not writable"):
        check_writable(bad)
    check_writable(tmp_path / "fine")
    assert (tmp_path / "fine").is_dir() and not list((tmp_path / "fine").iterdir())


def test_seed_noise_is_two_binomial_standard_errors_of_the_difference() -> None:
    assert seed_noise(90.0, 90.0, 400) == pytest.approx(100 * 2 * math.sqrt(0.9 * 0.1 * 2 / 400))
    assert seed_noise(100.0, 100.0, 359) == 0.0


def test_distilled_worse_than_alone_only_beyond_the_noise() -> None:
    within = compare(teacher=99.0, distilled=97.5, alone=98.0, n=359)  # noise ±2.2 points here
    assert not within.distilled_worse_than_alone and "warning" not in verdict(within, kd_weight=1, kd_temperature=4, feature_scale=1, epochs=15)
    beyond = compare(teacher=76.0, distilled=80.0, alone=85.85, n=10000)
    assert beyond.distilled_worse_than_alone and beyond.distillation_gain == pytest.approx(-5.85)
    line = verdict(beyond, kd_weight=1, kd_temperature=4, feature_scale=1, epochs=15)
    assert line.startswith("warning:") and "weak teacher" in line and "\n" not in line
    assert not any("weak teacher" in c for c in likely_causes(compare(99.0, 80.0, 90.0, 10000), 1, 4, 1, 15))
