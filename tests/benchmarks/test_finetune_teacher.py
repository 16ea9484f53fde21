"""benchmarks/finetune_teacher.py on a tiny fake CIFAR pair: a checkpoint das loads at the new size, a report, no rerun."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import finetune_teacher
from das.cli import guarded
from das.models import build_model
from tests.benchmarks.fakes import save_random_teacher, write_fake_cifar


@pytest.fixture
def argv(tmp_path) -> list[str]:
    return ["--teacher", "resnet20", "--teacher-checkpoint", str(save_random_teacher(tmp_path / "t.th")),
            "--train-file", str(write_fake_cifar(tmp_path / "train.npz", 80)), "--test-file", str(write_fake_cifar(tmp_path / "test.npz", 20, seed=1)),
            "--image-size", "16", "--val-images", "10", "--epochs", "1", "--batch-size", "16", "--threads", "1", "--no-progress",
            "--out", str(tmp_path / "out" / "teacher16.pt")]


def test_fine_tunes_every_weight_and_writes_a_loadable_checkpoint(argv, tmp_path, one_thread) -> None:
    assert finetune_teacher.main(argv) == 0
    out = tmp_path / "out" / "teacher16.pt"
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["image_size"] == 16 and report["settings"]["train_images"] == 70 and report["test_images"] == 20
    assert set(report["test_acc_before"]) == set(report["test_acc_after"]) == {"native", "small"}
    tuned = build_model("resnet20", 10, checkpoint=str(out))  # strict load: the same architecture, every key
    start = build_model("resnet20", 10, checkpoint=str(tmp_path / "t.th"))
    start_params = dict(start.named_parameters())
    still = [k for k, v in tuned.named_parameters() if torch.equal(v, start_params[k])]
    assert not still, f"not fine-tuned: {still}"  # every weight trained ...
    a, b = tuned.layer2[0].conv1.weight.flatten(), start.layer2[0].conv1.weight.flatten()
    assert torch.cosine_similarity(a, b, dim=0) > 0.9  # ... starting from the checkpoint (a fresh init would be ~0)
    with torch.no_grad():
        assert tuned.eval()(torch.zeros(2, 3, 16, 16)).shape == (2, 10)


def test_a_finished_fine_tune_is_not_redone_and_bad_values_are_one_line(argv, tmp_path, monkeypatch, one_thread, capsys) -> None:
    assert finetune_teacher.main(argv) == 0
    monkeypatch.setattr(finetune_teacher, "fit_and_test", lambda *a, **k: pytest.fail("fine-tuned again"))
    assert finetune_teacher.main(argv) == 0
    for flag, value in (("--epochs", "0"), ("--lr", "-1"), ("--val-images", "500")):
        bad = [*argv, flag, value, "--out", str(tmp_path / "other.pt")]
        assert guarded(finetune_teacher.main, bad) == 1
        assert flag in capsys.readouterr().err
