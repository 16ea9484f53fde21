"""benchmarks/torchdistill_compare.py: das's side, the batches both sides share, bad input in one line, and the whole
tiny comparison where a torchdistill venv is at hand (torchdistill is never installed in das's environment)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import torchdistill_compare as tc
from benchmarks import torchdistill_side
from benchmarks.throughput import das_loss, timed
from das.data.splits import ImageSplit
from das.data.transforms import eval_transform
from das.errors import DasError
from das.paths import REPO_ROOT
from tests.benchmarks.fakes import save_random_teacher, write_fake_cifar


def torchdistill_python() -> str | None:
    """$DAS_TORCHDISTILL_PYTHON, else the venv the script's docstring makes beside the checkout, if either exists."""
    for candidate in (os.environ.get("DAS_TORCHDISTILL_PYTHON"), REPO_ROOT.parent / "venvs" / "torchdistill" / "bin" / "python"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {"train": write_fake_cifar(tmp_path / "train.npz", 40), "test": write_fake_cifar(tmp_path / "test.npz", 20, seed=1),
            "teacher": save_random_teacher(tmp_path / "resnet56.pt", "resnet56")}


def tiny(files: dict[str, Path], tmp_path: Path, *extra: str) -> list[str]:
    return ["--train-file", str(files["train"]), "--test-file", str(files["test"]), "--teacher-checkpoint", str(files["teacher"]),
            "--batch", "8", "--train-images", "16", "--test-images", "10", "--epochs", "1", "--rounds", "2", "--steps", "1",
            "--warmup", "0", "--threads", "1", "--out", str(tmp_path / "tdc.json"), *extra]


def test_das_is_configured_as_torchdistill_s_kd(files) -> None:
    args = tc.parse_args(["--teacher-checkpoint", str(files["teacher"])])
    kd = torchdistill_side.kd_criterion(args.temperature, args.alpha)["kwargs"]["sub_terms"]["kd"]["criterion"]["kwargs"]
    assert (kd["temperature"], kd["alpha"]) == (4.0, 0.9)  # torchdistill's CIFAR-10 KD samples
    assert tc.das_losses(args) == {"ce": 0.9, "kd": {"weight": 1.0 - 0.9, "temperature": 4.0}}  # and no cosine term
    module = tc.das_module(args)
    assert not module.uses_features  # no feature map is captured: logits-only KD on both sides
    assert not module.teacher.training and not any(p.requires_grad for p in module.teacher.parameters())
    config = module.optim
    assert (config.lr, config.momentum, config.nesterov, config.weight_decay, config.decay_norm_and_bias) == (0.1, 0.9, False, 1e-4, True)


def test_the_batches_are_drawn_once_seeded_and_leave_the_global_generator_alone() -> None:
    split = ImageSplit(torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8), torch.arange(20))
    state = torch.random.get_rng_state()
    first = tc.draw_schedule(split, epochs=2, batch=8, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert len(first) == 2 * 16  # two epochs of two full batches; the remainder of 4 dropped each time
    for epoch in first.labels.view(2, 16):
        assert len(set(epoch.tolist())) == 16  # an epoch is a shuffle: no image twice
    again, other = tc.draw_schedule(split, 2, 8, 0), tc.draw_schedule(split, 2, 8, 1)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.labels, other.labels)


def test_das_side_trains_the_schedule_from_the_saved_student(files, tmp_path) -> None:
    args = tc.parse_args(tiny(files, tmp_path))
    data = tc.load_images(args, tmp_path)
    schedule = tc.draw_schedule(data.subset("train"), args.epochs, args.batch, args.seed)
    module = tc.das_module(args)
    init = tmp_path / "student.pt"
    torch.save(module.student.state_dict(), init)
    run = tc.das_accuracy(args, schedule, data.subset("test"), data.mean, data.std, init, tmp_path)
    assert run["steps"] == len(schedule) // args.batch == len(run["losses"])
    assert all(math.isfinite(v) for v in run["losses"]) and 0.0 <= run["test_acc"] <= 100.0
    # its first step is das's KD on the first batch from the saved weights
    normalise = eval_transform(data.mean, data.std)
    x = torch.stack([normalise(img) for img in schedule.images[: args.batch]])
    module.train()
    assert run["losses"][0] == pytest.approx(das_loss(module)(x, schedule.labels[: args.batch]).item(), rel=1e-5)
    steps = tc.das_steps(module, args)
    assert all(timed(step, x, schedule.labels[: args.batch], 1, 0, torch.device("cpu")) > 0 for step in steps.values())


@pytest.mark.parametrize(("flags", "words"), [
    ([], "--torchdistill-python is needed"),
    (["--torchdistill-python", "/no/such/python"], "is not a file"),
    (["--torchdistill-python", sys.executable, "--parts", "speed,size"], "--parts"),
    (["--torchdistill-python", sys.executable, "--rounds", "0"], "--rounds"),
    (["--torchdistill-python", sys.executable, "--train-images", "4"], "--train-images 4 must be at least --batch"),
    (["--torchdistill-python", sys.executable, "--alpha", "1.5"], "--alpha"),
    (["--torchdistill-python", sys.executable, "--test-images", "21"], "--test-images 21 is more than the 20 images"),
    (["--torchdistill-python", sys.executable, "--train-file", "/no/such.npz"], "--train-file"),
])
def test_bad_input_is_one_line(flags, words, files, tmp_path) -> None:
    argv = tiny(files, tmp_path)
    with pytest.raises(DasError, match=words):
        tc.main([*argv, *flags])
    assert not (tmp_path / "tdc.json").exists()


@pytest.mark.skipif(importlib.util.find_spec("torchdistill") is not None, reason="das's own environment has torchdistill")
def test_a_python_without_torchdistill_is_one_line(files, tmp_path) -> None:
    with pytest.raises(DasError, match="cannot import torchdistill"):
        tc.main([*tiny(files, tmp_path), "--torchdistill-python", sys.executable])
    assert not (tmp_path / "tdc.json").exists()


def test_the_whole_tiny_comparison(files, tmp_path) -> None:
    python = torchdistill_python()
    if python is None:
        pytest.skip("no torchdistill venv: set DAS_TORCHDISTILL_PYTHON to a Python that imports torchdistill, or make "
                    "../venvs/torchdistill as benchmarks/torchdistill_compare.py's docstring shows")
    assert tc.main([*tiny(files, tmp_path), "--torchdistill-python", python]) == 0
    result = json.loads((tmp_path / "tdc.json").read_text())
    speed, accuracy = result["speed"], result["accuracy"]
    assert len(speed["rounds"]) == 2 and all(speed["images_per_s"][side] > 0 for side in ("das", "torchdistill", "plain"))
    assert speed["das_over_torchdistill"] == pytest.approx(speed["images_per_s"]["das"] / speed["images_per_s"]["torchdistill"])
    # the same KD: same initial weights, same first batch, same loss on both sides
    assert accuracy["first_loss_abs_difference"] < 1e-4 * accuracy["das"]["first_loss"]
    assert accuracy["das"]["steps"] == accuracy["torchdistill"]["steps"] == accuracy["steps"]
    assert accuracy["test_images"] == 10 and 0.0 <= accuracy["torchdistill"]["test_acc"] <= 100.0
    assert result["kd"]["torchdistill_criterion"]["kwargs"]["sub_terms"]["kd"]["criterion"]["kwargs"]["alpha"] == 0.9
    assert result["versions"]["torchdistill"] and result["settings"]["threads"] == 1
    assert not list(tmp_path.glob("*.torchdistill.log"))  # the subprocess's log is kept only when it fails
