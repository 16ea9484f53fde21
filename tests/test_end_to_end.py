"""search.py then train.py, as a user runs them, on a tiny version of the quickstart."""

from __future__ import annotations

import json

import pytest
import torch

import search
from das.data import DasDataModule
from das.distill import command as train
from das.evaluate import top1_accuracy
from das.models import build_model
from das.spec import ArchSpec


def test_search_then_train(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    small = ["--data.image_size", "8", "--data.batch_size", "32", "--space.args", '{"C": 4, "N": 1}']
    assert search.main([
        "--run_dir", str(run), *small, "--teacher.epochs", "1", "--study.trials", "3",
        "--study.probe_batch_size", "32", "--device", "cpu",
    ]) == 0
    out = capsys.readouterr().out
    assert "best student" in out and str(run) in out

    out_dir = tmp_path / "distill"
    assert train.main([
        *small[:4], "--model.student", str(run / "best_arch.json"), "--model.teacher", "resnet20",
        "--model.teacher_checkpoint", str(run / "teacher" / "teacher.pt"), "--model.input_size", "[3, 8, 8]",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(out_dir),
        "--trainer.logger", "false", "--trainer.callbacks", "[]",
    ]) == 0
    results = json.loads((out_dir / "results.json").read_text())
    assert 0 <= results["distilled_test_acc"] <= 100 and 0 <= results["baseline_test_acc"] <= 100
    best = json.loads((run / "best_arch.json").read_text())
    # the teacher is measured on the same test split in both commands
    assert results["teacher_test_acc"] == pytest.approx(best["search"]["teacher"]["test_acc"])
    # results.json agrees with itself and with the command that wrote it.
    assert results["student"] == str(run / "best_arch.json") and results["teacher"] == "resnet20" and results["epochs"] == 1
    test_split = DasDataModule(dataset="digits", image_size=8, batch_size=32)
    assert results["test_images"] == len(test_split.subset("test")) == 359
    assert results["distillation_gain"] == pytest.approx(results["distilled_test_acc"] - results["baseline_test_acc"])
    assert results["seed_noise"] > 0 and results["distilled_worse_than_alone"] == (-results["distillation_gain"] > results["seed_noise"])
    # Each saved student rebuilds from its file alone (the spec it carries) and scores what results.json reports.
    for folder, key in ((out_dir, "distilled_test_acc"), (out_dir / "baseline", "baseline_test_acc")):
        saved = torch.load(folder / "student.pt", weights_only=True)
        spec = ArchSpec.from_dict(saved["student_spec"])
        assert spec == ArchSpec.load(run / "best_arch.json")
        student = build_model(spec, 10)
        student.load_state_dict(saved["state_dict"])
        assert top1_accuracy(student, test_split.test_dataloader(), "cpu") == pytest.approx(results[key], abs=1e-3), key
        assert json.loads((folder / "student.json").read_text())["test_acc"] == results[key]
    out = capsys.readouterr().out
    assert "trained alone" in out and str(out_dir) in out


def test_a_teacher_checkpoint_without_a_teacher_is_refused(tmp_path, capsys) -> None:
    from das.cli import guarded

    argv = ["--model.student", "resnet20", "--model.teacher_checkpoint", "t.pt", "--trainer.max_epochs", "1",
            "--trainer.default_root_dir", str(tmp_path)]
    assert guarded(train.main, argv) == 1
    assert "no teacher" in capsys.readouterr().err


def test_user_mistakes_are_one_line_errors(tmp_path, capsys) -> None:
    from das.cli import guarded

    assert guarded(search.main, ["--run_dir", str(tmp_path), "--teacher.spec", "resnet2", "--study.trials", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "resnet20" in err and "\n" not in err
