"""train.py under DDP on the CPU: two gloo processes write each file once and test on the whole split like one process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from das.distill.compare import seed_noise

from tests.cli.test_train_cli import ROOT, TINY

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="DDP on gloo is exercised on Linux")


def train(tmp_path, name: str, *flags: str) -> tuple[subprocess.CompletedProcess, dict]:
    root = tmp_path / name
    proc = subprocess.run([sys.executable, "train.py", *TINY, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4",
                           "--trainer.default_root_dir", str(root), *flags],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads((root / "results.json").read_text())


def test_two_processes_write_once_and_test_the_whole_split(tmp_path) -> None:
    # The same global batch: 32 images a step in one process, 16 in each of two.
    one_proc, one = train(tmp_path, "one", "--data.batch_size", "32")
    two_proc, two = train(tmp_path, "two", "--data.batch_size", "16", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    assert two_proc.stdout.count("\nwrote ") == 1 and two_proc.stdout.count("tested on ") == 1  # rank 0 alone reports and writes
    assert two["test_images"] == one["test_images"]  # every test image once, not a padded shard per rank
    assert two["teacher_test_acc"] == one["teacher_test_acc"]  # the same frozen teacher on the same images
    # DDP changes the batch order (a DistributedSampler shards it) and BatchNorm's batch (16 images a process, its
    # statistics not synced), in effect another seed. The tolerance is the band train.py reports between two
    # accuracies on this test set: two binomial standard errors of their difference (das.distill.compare.seed_noise).
    a, b = one["distilled_test_acc"], two["distilled_test_acc"]
    assert abs(a - b) <= seed_noise(a, b, one["test_images"]), (a, b)


@pytest.mark.parametrize(("accelerator", "devices", "gpus", "words"), [
    ("gpu", "auto", 0, "no CUDA device is present"),
    ("cuda", 1, 0, "no CUDA device is present"),
    ("gpu", 4, 2, "trainer.devices=4 but 2 CUDA device(s)"),
    ("gpu", [0, 1, 2], 2, "but 2 CUDA device(s)"),
])
def test_gpus_that_are_not_there_are_one_line(accelerator, devices, gpus, words) -> None:
    from das.distill.command import check_devices
    from das.errors import DasError

    with pytest.raises(DasError, match=re.escape(words)):
        check_devices(accelerator, devices, gpus=gpus)
    check_devices("cpu", 4, gpus=0)  # CPU processes: as many as asked
    check_devices("gpu", 2, gpus=2)


def test_train_py_refuses_a_missing_gpu_in_one_line(tmp_path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, "train.py", *TINY, "--trainer.accelerator", "gpu", "--trainer.default_root_dir", str(tmp_path / "r")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1 and "no CUDA device is present" in errors[0], proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("precision", ["64-true", 64, "bf16-true", "16-true", "transformer-engine"])
def test_precisions_das_does_not_run_are_one_line(precision) -> None:
    from das.distill.command import check_precision
    from das.errors import DasError

    with pytest.raises(DasError, match=f"trainer.precision={precision} is not supported.*accepted: 32-true"):
        check_precision(precision)
    for fine in (None, 32, "32", "32-true", "bf16-mixed", "bf16", "16-mixed", 16):
        check_precision(fine)


def test_ddp_from_a_notebook_is_one_line() -> None:
    from das.distill.command import check_strategy
    from das.errors import DasError

    with pytest.raises(DasError, match="trainer.strategy=ddp .*interactive session.*ddp_notebook"):
        check_strategy("ddp", interactive=True)
    check_strategy("ddp", interactive=False)  # a script: Lightning re-launches it
    check_strategy("ddp_notebook", interactive=True)
    check_strategy("auto", interactive=True)


def test_train_py_refuses_double_precision_in_one_line(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "train.py", *TINY, "--trainer.precision", "64-true", "--trainer.default_root_dir", str(tmp_path / "r")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1 and "trainer.precision=64-true" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()
