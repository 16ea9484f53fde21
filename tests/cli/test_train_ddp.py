"""train.py under DDP on the CPU: two gloo processes write each file once and test on the whole split like one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

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
