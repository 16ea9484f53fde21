"""train.py as a user runs it: configs mean what they say, resume is exact, mistakes are one line."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from das.distill import command as train
from das.cli import INTERRUPTED, USER_ERROR, guarded

ROOT = Path(__file__).resolve().parents[2]
DISTILL_CONFIGS = sorted((ROOT / "configs" / "distill").glob("*.yaml"))
# A tiny student and teacher on 8×8 digits, a few batches an epoch: seconds per run on a CPU.
TINY = [
    "--model.student", "tests.tinynets:TinyNet", "--model.teacher", "tests.tinynets:wide_tiny_net",
    "--model.teacher_checkpoint", "null", "--model.input_size", "[3, 8, 8]", "--data.image_size", "8",
    "--data.batch_size", "32", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
    "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1",
]


def leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("path", DISTILL_CONFIGS, ids=lambda p: p.name)
def test_a_config_file_means_what_it_says(path: Path) -> None:
    """Keys written in the file resolve to the file's values; every other key to the code's default."""
    cli = train.make_cli(["--config", str(path)], instantiate=False)
    tree = yaml.safe_load(path.read_text())
    defaults = cli.parser.get_defaults()
    for key in cli.config.keys():
        if key == "config":
            continue
        found, written = lookup(tree, key)  # a dict-valued key such as model.losses is one value
        expected = written if found else defaults.get(key)
        assert plain(cli.config.get(key)) == plain(expected), f"{path.name}: {key}"


def lookup(tree: dict, key: str) -> tuple[bool, object]:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False, None
        tree = tree[part]
    return True, tree


def test_the_losses_block_builds_the_module_it_describes() -> None:
    """The configs' losses and feature_pairs reach DistillModule: its LossSpec is the file's block."""
    from das.distill import LossSpec
    for path in DISTILL_CONFIGS:
        cfg = train.make_cli(["--config", str(path)], instantiate=False).config
        written = yaml.safe_load(path.read_text())["model"]
        assert LossSpec.from_config(cfg.model.losses) == LossSpec.from_config(written["losses"]), path.name
        assert cfg.model.feature_pairs == written["feature_pairs"], path.name


def test_the_cifar_config_does_not_inherit_the_quickstart() -> None:
    cfg = train.make_cli(["--config", str(ROOT / "configs/distill/cifar10_resnet56.yaml")], instantiate=False).config
    assert plain(cfg.model.input_size) == [3, 32, 32]
    assert cfg.data.image_size is None  # CIFAR's own 32×32, not the quickstart's 16


def test_no_config_means_the_quickstart_and_flags_override_it() -> None:
    cfg = train.make_cli(["--trainer.max_epochs", "3"], instantiate=False).config
    quickstart = leaves(yaml.safe_load(train.DEFAULT_CONFIG.read_text()))
    assert cfg.trainer.max_epochs == 3
    assert cfg.model.student == quickstart["model.student"] and cfg.data.image_size == quickstart["data.image_size"]


class InterruptAt(Callback):
    """Press Ctrl-C (a real SIGINT) as epoch ``epoch`` starts, i.e. after the previous one finished."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            signal.raise_signal(signal.SIGINT)


def logged(root: Path) -> dict[tuple[int, str], str]:
    """Every value in a run's CSV logs by (step, metric), over all its logger versions (a resumed fit starts a new one)."""
    values: dict[tuple[int, str], str] = {}
    for path in sorted((root / "logs").glob("version_*/metrics.csv")):
        for row in csv.DictReader(path.open()):
            values.update({(int(row["step"]), key): value for key, value in row.items() if value and key != "step"})
    return values


def test_ctrl_c_exits_130_and_resume_equals_the_uninterrupted_run(tmp_path, capsys) -> None:
    """2 epochs straight vs Ctrl-C after epoch 1 then --ckpt_path last: bit-identical weights, metrics and accuracy on CPU."""
    run = [*TINY, "--trainer.max_epochs", "2", "--baseline", "false", "--trainer.log_every_n_steps", "1"]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert guarded(train.main, [*run, "--trainer.default_root_dir", str(straight)]) == 0
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the raised SIGINT must meet Python's own handler
    code = guarded(train.main, [*run, "--trainer.default_root_dir", str(broken), "--trainer.callbacks", f"{__name__}.InterruptAt"])
    assert code == INTERRUPTED
    assert "--ckpt_path last" in capsys.readouterr().err
    last = broken / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0 and not (broken / "results.json").exists()

    assert guarded(train.main, [*run, "--trainer.default_root_dir", str(broken), "--ckpt_path", "last"]) == 0
    a, b = (json.loads((d / "results.json").read_text()) for d in (straight, broken))
    assert a["distilled_test_acc"] == b["distilled_test_acc"] and a["teacher_test_acc"] == b["teacher_test_acc"]
    wa, wb = (torch.load(d / "student.pt", weights_only=True)["state_dict"] for d in (straight, broken))
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    # Each logged metric at each step, the resumed epoch's included, as the uninterrupted run logged it.
    straight_log, broken_log = logged(straight), logged(broken)
    assert sorted(step for step, key in straight_log if key == "train/loss") == [0, 1, 2, 3, 4, 5]  # 3 batches × 2 epochs
    assert sum(key == "val/acc" for _, key in straight_log) == 2 and any(key == "test/acc" for _, key in straight_log)
    assert broken_log == straight_log
    assert sorted(p.name for p in (broken / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_results_report_the_teacher_and_the_comparison(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert guarded(train.main, [*TINY, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    for key in ("teacher_test_acc", "distilled_test_acc", "baseline_test_acc", "seed_noise", "distilled_worse_than_alone"):
        assert key in results
    assert results["test_images"] == 359  # the digits test split, the same images for all three
    assert (out / "baseline" / "student.pt").is_file() and (out / "baseline" / "checkpoints" / "last.ckpt").is_file()
    printed = capsys.readouterr().out
    assert "seed noise" in printed
    assert f"wrote {out / 'student.pt'}, {out / 'student.onnx'}," in printed
    for run in (out, out / "baseline"):
        assert_onnx_gives_the_eager_student(run)


def assert_onnx_gives_the_eager_student(run: Path) -> None:
    """student.onnx, loaded on its own by onnxruntime, gives student.pt's outputs within 1e-5."""
    import onnxruntime

    from das.models import build_model

    saved = torch.load(run / "student.pt", weights_only=True)
    student = build_model(saved["student"], 10)
    student.load_state_dict(saved["state_dict"])
    session = onnxruntime.InferenceSession(str(run / "student.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager = student.eval()(x).numpy()
    (exported,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert abs(exported - eager).max() <= 1e-5
    assert json.loads((run / "student.json").read_text())["onnx_max_abs_diff"] <= 1e-5


def test_adamw_warmup_step_schedule_clipping_and_bf16_train_on_cpu(tmp_path) -> None:
    """The optimiser flags and Lightning's own (clipping, bf16 autocast) on a CPU: the LR follows the schedule, top-5 is logged."""
    out = tmp_path / "run"
    argv = [*TINY, "--baseline", "false", "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(out),
            "--model.optimizer", "adamw", "--model.lr", "0.003", "--model.warmup_epochs", "0.67",  # 2 of 3 steps an epoch
            "--model.schedule", "step", "--model.milestones", "[1]", "--model.gamma", "0.1",
            "--trainer.gradient_clip_val", "0.5", "--trainer.precision", "bf16-mixed", "--trainer.log_every_n_steps", "1",
            "--trainer.callbacks", "lightning.pytorch.callbacks.LearningRateMonitor"]
    assert guarded(train.main, argv) == 0
    rows = list(csv.DictReader((out / "logs" / "version_0" / "metrics.csv").open()))
    lr_key = next(k for k in rows[0] if k.startswith("lr-AdamW"))
    assert [float(r[lr_key]) for r in rows if r[lr_key]] == pytest.approx([0.001, 0.002, 0.003, 0.0003, 0.0003, 0.0003])
    assert all(any(r.get(k) for r in rows) for k in ("train/top5", "val/top5", "test/top5", "test/acc"))
    assert json.loads((out / "results.json").read_text())["distilled_test_acc"] >= 0


def test_a_search_result_student_writes_next_to_its_arch_file(tmp_path) -> None:
    arch = tmp_path / "search" / "best_arch.json"
    arch.parent.mkdir()
    arch.write_text(json.dumps({"space": "nb201", "space_args": {"C": 4, "N": 1},
                                "choices": {"arch": "|nor_conv_1x1~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"}}))
    argv = [*TINY, "--model.student", str(arch), "--model.teacher", "null", "--trainer.max_epochs", "1", "--trainer.limit_test_batches", "1"]
    assert guarded(train.main, argv) == 0
    assert (arch.parent / "distill" / "results.json").is_file() and (arch.parent / "distill" / "checkpoints" / "last.ckpt").is_file()


def test_a_leaderboard_row_student_writes_next_to_its_leaderboard_and_saves_its_spec(tmp_path) -> None:
    """No --trainer.default_root_dir: the run goes to the search's distill-rank2/, and student.pt rebuilds without the search."""
    from tests.core.test_models import write_search

    specs = write_search(tmp_path / "search")
    argv = [*TINY, "--model.student", f"{tmp_path / 'search' / 'leaderboard.csv'}#2", "--model.teacher", "null",
            "--trainer.limit_test_batches", "1"]
    assert guarded(train.main, argv) == 0
    out = tmp_path / "search" / "distill-rank2"
    assert (out / "results.json").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    assert torch.load(out / "student.pt", weights_only=True)["student_spec"] == specs[1].to_dict()
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["student_spec"] == specs[1].to_dict()


def error_line(err: str) -> str:
    """The one ``error:`` line of a failed run (Lightning may log an info line such as the seed before it)."""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize(("argv", "expected"), [
    (["--trainer.max_epohcs", "2"], "did you mean --trainer.max_epochs"),  # an unknown flag
    (["--model.lr", "fast"], "model.lr"),  # a bad type
    (["--trainer.logger", "lightning.pytorch.loggers.NoSuchLogger"], "NoSuchLogger"),  # a bad class
])
def test_argument_errors_are_one_line_and_exit_1(argv, expected, capsys) -> None:
    assert guarded(train.main, [*TINY, *argv]) == USER_ERROR
    assert expected in error_line(capsys.readouterr().err)


@pytest.mark.parametrize(("losses", "expected"), [
    ("{ce: 1, kdd: 1}", "unknown distillation loss 'kdd'"),  # a bad loss name
    ("{ce: 1, kd: -1}", "loss 'kd' weight=-1"),  # a negative weight
    ("{kd: 1}", "add ce"),  # the baseline could not train: refused before the distilled run
])
def test_a_bad_loss_config_is_one_line_and_trains_nothing(losses, expected, tmp_path, capsys) -> None:
    root = tmp_path / "run"
    assert guarded(train.main, [*TINY, "--trainer.default_root_dir", str(root), "--model.losses", losses]) == USER_ERROR
    assert expected in error_line(capsys.readouterr().err)
    assert not (root / "checkpoints").exists()


def test_tensorboard_logger_without_tensorboard_says_how_to_install(tmp_path, capsys) -> None:
    if train._tensorboard_available():
        pytest.skip("tensorboard is installed here")
    argv = [*TINY, "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger"]
    assert guarded(train.main, argv) == USER_ERROR
    assert ".[tensorboard]" in error_line(capsys.readouterr().err)


def unwritable_dir(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root writes through any permission bits; sysfs refuses even root
        return Path("/sys/das-train-test-run")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    return locked / "run"


@pytest.mark.parametrize("case", ["max_epochs_0", "read_only_run_dir", "nan_loss", "missing_student_file"])
def test_bad_input_is_one_line_exit_1_without_traceback(case, tmp_path) -> None:
    """As a user sees it: a subprocess, exit status 1, one ``error:`` line naming the value."""
    root = ["--trainer.default_root_dir", str(tmp_path / "run")]
    argv, expected = {
        "max_epochs_0": ([*root, "--trainer.max_epochs", "0"], "trainer.max_epochs=0"),
        "read_only_run_dir": (["--trainer.default_root_dir", str(unwritable_dir(tmp_path))], "not writable"),
        "nan_loss": ([*root, "--model.lr", "1e30"], "lower it"),
        "missing_student_file": ([*root, "--model.student", str(tmp_path / "nope.json")], "nope.json"),
    }[case]
    proc = subprocess.run([sys.executable, "train.py", *TINY, "--trainer.max_epochs", "1", *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == USER_ERROR, output
    assert "Traceback" not in output and len(errors) == 1 and expected in errors[0], output
    if case != "nan_loss":  # refused before any training or data loading
        assert "Epoch" not in output and not (tmp_path / "run" / "checkpoints").exists()


def test_a_command_naming_its_own_teacher_or_data_starts_from_the_code_defaults() -> None:
    """The README's own-teacher example must not inherit the quickstart's 16×16 digits."""
    for flags in (["--model.teacher", "resnet20"], ["--data.dataset", "digits"]):
        cfg = train.make_cli(["--model.student", "resnet20", *flags], instantiate=False).config
        assert cfg.data.image_size is None and cfg.trainer.max_epochs is None, flags  # quickstart: 16 and 15


def test_the_baseline_trains_under_the_distilled_run_s_trainer_settings(tmp_path, monkeypatch) -> None:
    """Precision, batch limits, clipping, epochs and accumulation: the alone run gets what the distilled run got."""
    seen: list[dict[str, object]] = []

    def record(module, datamodule, trainer, ckpt_path=None) -> float:
        seen.append({"teacher": module.teacher is not None, "precision": trainer.precision, "max_epochs": trainer.max_epochs,
                     "limit_train_batches": trainer.limit_train_batches, "limit_val_batches": trainer.limit_val_batches,
                     "gradient_clip_val": trainer.gradient_clip_val, "accumulate_grad_batches": trainer.accumulate_grad_batches})
        return 50.0

    monkeypatch.setattr(train, "fit_and_test", record)
    monkeypatch.setattr(train, "tested_batches", lambda trainer, data: 1)  # nothing was tested, so the trainer counted no batches
    argv = [*TINY, "--trainer.max_epochs", "2", "--trainer.precision", "bf16-mixed", "--trainer.gradient_clip_val", "0.25",
            "--trainer.accumulate_grad_batches", "2", "--trainer.limit_test_batches", "1", "--trainer.default_root_dir", str(tmp_path / "run")]
    assert guarded(train.main, argv) == 0
    assert [s.pop("teacher") for s in seen] == [True, False]
    distilled, alone = seen
    assert distilled == alone
    assert distilled["precision"] == "bf16-mixed" and distilled["gradient_clip_val"] == 0.25 and distilled["limit_train_batches"] == 3


def test_train_py_streams_an_image_folder_and_stops_at_a_corrupt_image_in_one_line(tmp_path, capsys) -> None:
    """The lazy folder through the whole command (a worker decodes); a corrupt JPEG is one line, exit 1, no checkpoint."""
    from tests.data.test_streamed import write_folder

    images = tmp_path / "images"
    write_folder(images, "train", {"a": 24, "b": 24}, size=(12, 12), fmt="jpg")
    write_folder(images, "test", {"a": 4, "b": 4}, size=(12, 12), fmt="jpg", seed=1)
    streamed = [*TINY, "--data.dataset", "folder", "--data.root", str(images), "--data.num_workers", "1", "--data.batch_size", "8"]
    assert guarded(train.main, [*streamed, "--trainer.default_root_dir", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test_images"] == 8 and (tmp_path / "run" / "student.pt").is_file()
    bad = images / "train" / "b" / "3.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated part-way through the JPEG
    every_batch = ["--trainer.limit_train_batches", "1.0"]  # the first epoch reads every training image, the bad one too
    assert guarded(train.main, [*streamed, *every_batch, "--trainer.default_root_dir", str(tmp_path / "broken")]) == USER_ERROR
    assert f"cannot decode image {bad}" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "broken" / "checkpoints").exists() and not (tmp_path / "broken" / "results.json").exists()
