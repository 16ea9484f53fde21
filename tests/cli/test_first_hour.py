"""The first hour as a new user met it (issue 29, item 7): each surprise is one clear line or a warning that says what to do.

Each test names the case it guards; every one of them failed on the behaviour before its fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import search
from das.cli import USER_ERROR, guarded
from das.data import DasDataModule
from das.distill import command as train
from das.errors import DasError
from das.search.config import BudgetConfig
from tests.cli.test_search_cli import one_line_error, run_main
from tests.cli.test_train_cli import TINY, error_line

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_search(tmp_path) -> list[str]:
    """search.py flags for a few seconds' search that trains its own TinyNet teacher (no checkpoint)."""
    return [
        "--run_dir", str(tmp_path / "run"), "--teacher.spec", "tests.tinynets:TinyNet", "--data.image_size", "8",
        "--data.batch_size", "64", "--data.augment", "[]", "--space.args", "{C: 4, N: 1}", "--study.probe_batch_size", "16",
        "--study.sampler", "random", "--device", "cpu", "--study.trials", "2", "--teacher.epochs", "1",
    ]


# --------------------------------------------------------------------------- silently wrong


@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_a_teacher_of_no_epochs_is_refused_in_search_s_own_words(epochs, tiny_search, tmp_path, monkeypatch, capsys) -> None:
    """--teacher.epochs 0 saved an untrained teacher (10% top-1) and reused it; -1 named train.py's trainer.max_epochs."""
    code, err = run_main([*tiny_search, "--teacher.epochs", epochs], monkeypatch, capsys)
    line = one_line_error(err)
    assert code == USER_ERROR and f"teacher.epochs={epochs}" in line and "--teacher.checkpoint" in line, line
    assert "trainer.max_epochs" not in line
    assert not (tmp_path / "run" / "teacher" / "teacher.pt").exists()


def test_a_diverging_teacher_names_search_s_flag(tiny_search, tmp_path, monkeypatch, capsys) -> None:
    """--teacher.lr 1e9 said 'model.lr' (train.py's flag) in search.py's message."""
    code, err = run_main([*tiny_search, "--teacher.lr", "1e9"], monkeypatch, capsys)
    line = one_line_error(err)
    assert code == USER_ERROR and "teacher.lr=1e+09" in line and "model.lr" not in line, line
    assert not (tmp_path / "run" / "teacher" / "teacher.pt").exists()


def test_a_near_chance_teacher_is_warned_about(tiny_search, monkeypatch, capsys) -> None:
    """A teacher at chance (here a learning rate too small to learn anything) ranked students without a word."""
    code, err = run_main([*tiny_search, "--teacher.lr", "1e-9"], monkeypatch, capsys)
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert code == 0 and len(warnings) == 1, err
    assert "near chance (10.00% for 10 classes)" in warnings[0] and "--teacher.epochs" in warnings[0], warnings


def test_train_py_warns_about_a_near_chance_teacher(tmp_path, capsys) -> None:
    """A teacher of random weights (no checkpoint) was distilled from without a word."""
    argv = [*TINY, "--baseline", "false", "--trainer.limit_test_batches", "2", "--trainer.default_root_dir", str(tmp_path / "run")]
    assert guarded(train.main, argv) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "near chance" in warnings[0] and "--model.teacher_checkpoint" in warnings[0], warnings


def write_quickstart_like_search(run: Path, teacher_checkpoint: Path) -> Path:
    """best_arch.json (searched at 3×8×8) and a leaderboard with one row over the budget, as search.py writes them."""
    from tests.core.test_models import write_search

    run.mkdir(parents=True)
    specs = write_search(run)
    rows = (run / "leaderboard.csv").read_text().splitlines()
    header = rows[0].split(",")
    last = rows[2].split(",")
    last[header.index("feasible")] = "False"
    (run / "leaderboard.csv").write_text("\n".join([rows[0], rows[1], ",".join(last)]) + "\n")
    (run / "search_config.yaml").write_text(yaml.safe_dump({"budget": {"max_params": 1000, "max_flops": None}}))
    best = {**specs[0].to_dict(), "search": {"data": {"dataset": "digits", "input_shape": [3, 8, 8], "num_classes": 10},
                                             "teacher": {"spec": "tests.tinynets:wide_tiny_net", "checkpoint": str(teacher_checkpoint)}}}
    (run / "best_arch.json").write_text(json.dumps(best))
    return run


@pytest.fixture
def searched(tmp_path) -> Path:
    from tests.tinynets import wide_tiny_net

    ckpt = tmp_path / "teacher.pt"
    torch.save(wide_tiny_net().state_dict(), ckpt)
    return write_quickstart_like_search(tmp_path / "search", ckpt)


def tiny_train(searched: Path, *flags: str) -> list[str]:
    return [*TINY, "--model.teacher_checkpoint", str(searched.parent / "teacher.pt"), "--trainer.limit_test_batches", "1", *flags]


def test_an_over_budget_leaderboard_row_is_distilled_with_a_warning(searched, capsys) -> None:
    """leaderboard.csv#2 over the budget, never scored, was distilled without a word."""
    argv = tiny_train(searched, "--model.student", f"{searched / 'leaderboard.csv'}#2", "--baseline", "false")
    assert guarded(train.main, argv) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:") and "budget" in line]
    assert len(warnings) == 1, warnings
    assert "leaderboard.csv#2" in warnings[0] and "budget.max_params=1000" in warnings[0] and "never scored" in warnings[0]


def test_another_image_size_than_the_search_s_is_refused_with_the_search_s_teacher(searched, tmp_path, capsys) -> None:
    """--data.image_size 32 on a search made at 16 ran the search's teacher at 32.59% instead of 99.16%."""
    root = tmp_path / "run"
    argv = tiny_train(searched, "--model.student", str(searched / "best_arch.json"), "--data.image_size", "16",
                      "--model.input_size", "[3, 16, 16]", "--trainer.default_root_dir", str(root))
    assert guarded(train.main, argv) == USER_ERROR
    line = error_line(capsys.readouterr().err)
    assert "3×16×16" in line and "3×8×8" in line and "--data.image_size 8" in line, line
    assert not (root / "checkpoints").exists()


# --------------------------------------------------------------------------- a raw traceback


def test_images_too_small_for_the_networks_are_one_line_in_train_py(tmp_path, capsys) -> None:
    """train.py --data.image_size 2 ended in a raw traceback; search.py said it in one line."""
    root = tmp_path / "run"
    from das.spec import ArchSpec
    from tests.core.test_models import ARCHS

    student = ArchSpec.make("nb201", {"arch": ARCHS[0]}, {"C": 4, "N": 1}).to_json()
    argv = [*TINY, "--model.student", student, "--data.image_size", "2", "--trainer.default_root_dir", str(root)]
    assert guarded(train.main, argv) == USER_ERROR
    line = error_line(capsys.readouterr().err)
    assert "model.student=" in line and "cannot run on the 3×2×2 images" in line and "raise data.image_size" in line, line
    assert not (root / "checkpoints").exists()


# --------------------------------------------------------------------------- misleading words


def test_an_unimportable_student_is_called_a_student(tmp_path, capsys) -> None:
    """--model.student pkg:nope called it a teacher."""
    argv = [*TINY, "--model.student", "pkg:nope", "--trainer.default_root_dir", str(tmp_path / "run")]
    assert guarded(train.main, argv) == USER_ERROR
    line = error_line(capsys.readouterr().err)
    assert "student 'pkg:nope'" in line and "teacher" not in line, line


def test_the_budget_in_a_calibration_error_reads_as_the_flags(tmp_path) -> None:
    """The calibration's refusal printed a raw BudgetConfig(max_params=..., ...)."""
    from das.search.calibration_step import _draw_students
    from das.search.config import CalibrateConfig
    from das.spaces import SPACES

    space = SPACES.get("nb201")(C=4, N=1)
    budget = BudgetConfig(max_params=200)  # only cells without convolutions fit
    with pytest.raises(DasError) as err:
        _draw_students(CalibrateConfig(students=50), space, budget, 10, (3, 8, 8))
    assert "BudgetConfig(" not in str(err.value) and "budget.max_params=200" in str(err.value), err.value
    assert str(budget) == "budget.max_params=200" and str(BudgetConfig()) == "no budget"


def test_changing_only_the_space_drops_the_quickstart_s_space_args_with_a_note(capsys) -> None:
    """--space.name resnet_cifar on the quickstart failed on the quickstart's nb201 args, which the user never typed."""
    cfg = search.parse(search.build_parser(), ["--space.name", "timm"])
    assert cfg.space.name == "timm" and cfg.space.args == {}
    out = capsys.readouterr().out
    assert "space.args {'C': 8, 'N': 1}" in out and "nb201" in out and "--space.args" in out, out
    # Args the user gives, or the config's own space, are kept.
    assert search.parse(search.build_parser(), ["--space.name", "timm", "--space.args", "{family: resnet}"]).space.args == {"family": "resnet"}
    assert search.parse(search.build_parser(), ["--space.name", "nb201"]).space.args == {"C": 8, "N": 1}


@pytest.mark.parametrize("command", ["search", "train"])
def test_a_flag_before_config_that_the_config_overrides_is_refused(command) -> None:
    """Flags before --config were silently overridden by it."""
    config = ROOT / "configs" / ("quickstart.yaml" if command == "search" else "distill/quickstart.yaml")
    key = "--study.trials" if command == "search" else "--trainer.max_epochs"
    argv = [key, "3", "--config", str(config)]
    with pytest.raises(DasError, match=f"{key} 3 comes before --config .* put it after --config"):
        if command == "search":
            search.parse(search.build_parser(), argv)
        else:
            train.make_cli(argv, instantiate=False)
    # A flag the config does not set is not overridden, and flags after --config are its overrides.
    if command == "search":
        assert search.parse(search.build_parser(), ["--workers", "2", "--config", str(config)]).workers == 2
        assert search.parse(search.build_parser(), ["--config", str(config), key, "3"]).study.trials == 3


# --------------------------------------------------------------------------- noise


def test_a_warmup_as_long_as_the_run_is_shortened_with_a_note(tmp_path, capsys) -> None:
    """--trainer.max_epochs 1 was refused on the quickstart, whose warmup is one epoch."""
    argv = [*TINY, "--model.warmup_epochs", "1.0", "--trainer.max_epochs", "1", "--baseline", "false",
            "--trainer.limit_test_batches", "1", "--trainer.default_root_dir", str(tmp_path / "run")]
    assert guarded(train.main, argv) == 0
    err = capsys.readouterr().err
    assert "model.warmup_epochs=1.0" in err and "warming up for 0.5 epochs" in err, err


def test_data_loader_workers_are_capped_at_the_cpus_this_process_may_use() -> None:
    """num_workers: 4 on 2 cores gave a DataLoader warning on every run."""
    data = DasDataModule(dataset="digits", image_size=8, num_workers=512)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert data.test_dataloader().num_workers == min(512, cpus)
    assert DasDataModule(dataset="digits", image_size=8, num_workers=0).test_dataloader().num_workers == 0


def test_a_search_that_trains_its_teacher_prints_no_lightning_noise(tmp_path) -> None:
    """Teacher progress bars, Lightning's logger tip and a torch deprecation warning came with every run."""
    argv = ["--run_dir", str(tmp_path / "run"), "--teacher.spec", "tests.tinynets:TinyNet", "--data.image_size", "8",
            "--data.augment", "[]", "--space.args", "{C: 4, N: 1}", "--study.probe_batch_size", "16", "--study.sampler", "random",
            "--device", "cpu", "--study.trials", "2", "--teacher.epochs", "1"]
    proc = subprocess.run([sys.executable, "search.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    for noise in ("Epoch 0", "💡", "deprecated", "Testing DataLoader"):
        assert noise not in output, (noise, output)


def test_the_next_hint_is_the_exact_train_command(tmp_path) -> None:
    """The hint said '(plus your data settings)' without naming them or the matching distill config."""
    from das.search.next_step import train_command

    data = DasDataModule(dataset="digits", image_size=12, batch_size=32, augment=["crop"])
    hint = train_command(tmp_path / "run", "resnet20", "t.pt", data.hparams, [])
    assert hint == (f"python train.py --model.student {tmp_path / 'run'}/best_arch.json --model.teacher resnet20 "
                    "--model.teacher_checkpoint t.pt --data.image_size 12 --data.augment '[crop]' --data.batch_size 32 "
                    "--model.input_size '[3, 12, 12]' --trainer.max_epochs 15")
    matching = ROOT / "configs" / "search" / "cifar10_resnet56.yaml"
    hint = train_command(tmp_path / "run", "resnet56", "t.pt", data.hparams, [str(matching)])
    assert hint.startswith(f"python train.py --config configs/distill/cifar10_resnet56.yaml --model.student {tmp_path / 'run'}/best_arch.json")
    assert "--data." not in hint
