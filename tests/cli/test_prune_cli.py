"""prune.py as a user runs it: both modes end to end on tiny settings, the results file, masked students
that reload with the same outputs, exact resume after Ctrl-C, and one-line errors for bad values."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from das.cli import INTERRUPTED, USER_ERROR, guarded
from das.distill import DistillModule
from das.models import build_model
from das.prune import applied_masks
from das.prune import command as prune
from tests.cli.test_train_cli import error_line, lookup, plain

ROOT = Path(__file__).resolve().parents[2]
PRUNE_CONFIGS = sorted((ROOT / "configs" / "prune").glob("*.yaml"))
# A tiny student on 8×8 digits, a few batches an epoch: seconds per run on a CPU.
TINY = [
    "--model.student", "tests.tinynets:TinyNet", "--model.teacher_checkpoint", "null", "--model.input_size", "[3, 8, 8]",
    "--data.image_size", "8", "--data.batch_size", "32", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
    "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    "--trainer.max_epochs", "1",
]
AT_INIT = [*TINY, "--model.teacher", "tests.tinynets:wide_tiny_net", "--prune.method", "px", "--prune.density", "0.2",
           "--prune.rounds", "3", "--prune.probe_batch_size", "16"]
SLIM = [*TINY, "--model.teacher", "null", "--prune.method", "slim", "--prune.ratio", "0.5", "--prune.sparse_epochs", "1",
        "--prune.bn_l1", "0.001"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("path", PRUNE_CONFIGS, ids=lambda p: p.name)
def test_a_prune_config_means_what_it_says(path: Path) -> None:
    """Keys written in the file resolve to the file's values; every other key to the code's default."""
    cli = prune.make_cli(["--config", str(path)], instantiate=False)
    tree = yaml.safe_load(path.read_text())
    defaults = cli.parser.get_defaults()
    for key in cli.config.keys():
        if key == "config":
            continue
        found, written = lookup(tree, key)
        expected = written if found else defaults.get(key)
        assert plain(cli.config.get(key)) == plain(expected), f"{path.name}: {key}"


def test_every_config_s_prune_section_is_valid() -> None:
    from das.prune.config import PruneConfig

    for path in PRUNE_CONFIGS:
        section = yaml.safe_load(path.read_text())["prune"]
        section.pop("checkpoint", None)  # the files they name exist on a user's machine, not here
        if section["method"] == "slim":
            section.setdefault("sparse_epochs", 1)
        PruneConfig(**section)


def test_no_config_is_the_px_quickstart_and_method_slim_the_slim_one() -> None:
    px = prune.make_cli([], instantiate=False).config
    assert px.prune.method == "px" and px.prune.density == 0.1 and px.data.dataset == "digits"
    slim = prune.make_cli(["--prune.method", "slim"], instantiate=False).config
    assert slim.prune.method == "slim" and slim.prune.ratio == 0.5 and slim.model.teacher is None
    snip = prune.make_cli(["--prune.method=snip"], instantiate=False).config
    assert snip.prune.method == "snip" and snip.prune.density == 0.1  # the px quickstart with another method


def student_outputs(run: Path, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The trained student's outputs as each saved form rebuilds it: student.pt, last.ckpt, best.ckpt."""
    saved = torch.load(run / "student.pt", weights_only=True)
    plain_student = build_model(saved["student"], 10)
    plain_student.load_state_dict(saved["state_dict"])  # strict: plain keys, the masks baked in
    outputs = {"student.pt": plain_student.eval()(x)}
    for name in ("last.ckpt", "best.ckpt"):
        module = DistillModule.load_from_checkpoint(run / "checkpoints" / name).eval()
        outputs[name] = module(x)
    return outputs


def test_at_init_end_to_end_writes_the_results_and_the_student_reloads_identically(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert guarded(prune.main, [*AT_INIT, "--trainer.default_root_dir", str(run)]) == 0
    results = json.loads((run / "prune_results.json").read_text())
    assert results["complete"] and results["method"] == "px" and results["mode"] == "at_init"
    overall = results["density"]["overall"]
    assert overall["density"] == pytest.approx(0.2, abs=1 / overall["total"]) and results["sparsity"] == pytest.approx(1 - overall["density"])
    assert [r["name"] for r in results["density"]["layers"]] == ["body.0.weight", "body.3.weight", "fc.weight"]
    assert all(r["kept"] > 0 and 0 < r["density"] <= 1 for r in results["density"]["layers"]) and results["density"]["empty_layers"] == 0
    for size in ("params", "flops"):
        assert results[size]["after"] < results[size]["before"]
    assert results["params"]["before"] - results["params"]["after"] == overall["total"] - overall["kept"]
    assert set(results["test_acc"]) == {"before_training", "after_training", "teacher"}
    assert all(0 <= v <= 100 for v in results["test_acc"].values()) and results["test_images"] == 359
    assert {"student", "onnx", "masks", "results", "checkpoints", "run_dir"} <= set(results["paths"])
    assert "px: kept" in capsys.readouterr().out

    # The masks were fixed through training, and every saved form of the student gives the same outputs.
    masks = torch.load(run / "masks.pt", weights_only=True)
    state = torch.load(run / "student.pt", weights_only=True)["state_dict"]
    for name, mask in masks.items():
        assert (state[name][~mask] == 0).all() and (state[name][mask] != 0).all(), name
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outputs = student_outputs(run, x)
    assert torch.equal(outputs["student.pt"], outputs["last.ckpt"])
    last = DistillModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert {n: m.tolist() for n, m in applied_masks(last.student).items()} == {n: m.tolist() for n, m in masks.items()}
    import onnxruntime

    session = onnxruntime.InferenceSession(str(run / "student.onnx"), providers=["CPUExecutionProvider"])
    (exported,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert abs(exported - outputs["student.pt"].numpy()).max() <= 1e-5


def test_ctrl_c_exits_130_and_the_masked_run_resumes_to_the_uninterrupted_weights(tmp_path, capsys) -> None:
    """Straight 2 epochs vs Ctrl-C after epoch 1 then --ckpt_path last: the same masks and bit-identical weights on CPU."""
    run = [*AT_INIT, "--trainer.max_epochs", "2", "--prune.method", "snip"]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert guarded(prune.main, [*run, "--trainer.default_root_dir", str(straight)]) == 0
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the raised SIGINT must meet Python's own handler
    code = guarded(prune.main, [*run, "--trainer.default_root_dir", str(broken), "--trainer.callbacks", "tests.cli.test_train_cli.InterruptAt"])
    assert code == INTERRUPTED and "--ckpt_path last" in capsys.readouterr().err
    assert not json.loads((broken / "prune_results.json").read_text())["complete"] and not (broken / "student.pt").exists()

    assert guarded(prune.main, [*run, "--trainer.default_root_dir", str(broken), "--ckpt_path", "last"]) == 0
    assert "resuming: masks from" in capsys.readouterr().out
    wa, wb = (torch.load(d / "student.pt", weights_only=True)["state_dict"] for d in (straight, broken))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ra, rb = (json.loads((d / "prune_results.json").read_text()) for d in (straight, broken))
    assert ra["test_acc"] == rb["test_acc"] and ra["density"] == rb["density"]

    # Resuming under other settings is refused in one line; so is resuming a run dir with nothing in it.
    assert guarded(prune.main, [*run, "--trainer.default_root_dir", str(broken), "--ckpt_path", "last", "--prune.density", "0.3"]) == USER_ERROR
    assert "other settings (prune differ)" in error_line(capsys.readouterr().err)
    assert guarded(prune.main, [*run, "--trainer.default_root_dir", str(tmp_path / "empty"), "--ckpt_path", "last"]) == USER_ERROR
    assert "nothing to resume" in error_line(capsys.readouterr().err)


def test_slim_end_to_end_as_a_user_runs_it(tmp_path) -> None:
    """A subprocess: sparse training, slimming, distillation from the unpruned network; the student reloads identically."""
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "prune.py", *SLIM, "--trainer.default_root_dir", str(run)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "slim: kept 8 of 16 BatchNorm channels" in proc.stdout
    results = json.loads((run / "prune_results.json").read_text())
    assert results["complete"] and results["mode"] == "slim" and results["slim"]["bn_channels"]["removed_fraction"] == 0.5
    assert results["params"]["after"] < results["params"]["before"] and results["flops"]["after"] < results["flops"]["before"]
    assert set(results["test_acc"]) == {"unpruned", "before_training", "after_training"}
    assert results["sparse_training"]["epochs"] == 1 and results["sparse_training"]["bn_l1"] == 0.001
    assert results["teacher"] == {"spec": "tests.tinynets:TinyNet", "checkpoint": str(run / "sparse" / "student.pt")}
    for path in ("sparse/student.pt", "sparse/checkpoints/last.ckpt", "pruned.pt", "student.pt", "student.onnx", "checkpoints/last.ckpt"):
        assert (run / path).is_file(), path
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outputs = student_outputs(run, x)
    assert outputs["student.pt"].shape == (5, 10) and torch.equal(outputs["student.pt"], outputs["last.ckpt"])
    last = DistillModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert last.hparams.teacher == "tests.tinynets:TinyNet" and last.hparams.student == str(run / "pruned.pt")


@pytest.mark.parametrize(("base", "argv", "expected"), [
    (AT_INIT, ["--prune.density", "0"], "prune.density must be a number strictly between 0 and 1"),
    (AT_INIT, ["--prune.density", "1.5"], "prune.density must be a number strictly between 0 and 1"),
    (AT_INIT, ["--prune.density", "0.0001"], "fewer than one for each of the 3 prunable layers"),
    (AT_INIT, ["--prune.method", "synflw"], "did you mean 'synflow'"),
    (AT_INIT, ["--prune.scope", "local"], "prune.scope"),
    (AT_INIT, ["--prune.ratio", "0.5"], "prune.ratio=0.5 is an option of slim"),
    (AT_INIT, ["--ckpt_path", "some.ckpt"], "--ckpt_path last"),
    (SLIM, ["--prune.ratio", "1.0"], "prune.ratio=1.0 must be a number in (0, 1)"),
    (SLIM, ["--prune.ratio", "null", "--prune.threshold", "-1"], "threshold=-1.0 must be a finite number > 0"),
    (SLIM, ["--model.teacher", "resnet20"], "in slim mode the teacher is the unpruned network"),
    (SLIM, ["--prune.sparse_epochs", "0", "--prune.bn_l1", "null"], "slim needs a trained network"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_values_are_one_line_and_exit_1(base, argv, expected, tmp_path, capsys) -> None:
    root = tmp_path / "run"
    assert guarded(prune.main, [*base, "--trainer.default_root_dir", str(root), *argv]) == USER_ERROR
    assert expected in error_line(capsys.readouterr().err)
    assert not (root / "checkpoints").exists()


@pytest.mark.parametrize(("base", "argv", "expected"), [
    (AT_INIT, ["--prune.density", "0"], "error: prune.density must be a number strictly between 0 and 1"),
    (SLIM, ["--prune.ratio", "0"], "error: prune.ratio=0.0 must be a number in (0, 1)"),
], ids=["density", "ratio"])
def test_bad_density_and_ratio_fail_in_one_line_as_a_user_sees_it(base, argv, expected, tmp_path) -> None:
    """A subprocess: exit status 1, one ``error:`` line, no traceback, nothing trained."""
    proc = subprocess.run([sys.executable, "prune.py", *base, "--trainer.default_root_dir", str(tmp_path / "run"), *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == USER_ERROR, output
    assert "Traceback" not in output and len(errors) == 1 and errors[0].startswith(expected), output
    assert "Epoch" not in output and not (tmp_path / "run" / "checkpoints").exists()


def test_a_missing_quickstart_teacher_says_to_run_the_search_first(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # no runs/quickstart here
    assert guarded(prune.main, ["--trainer.default_root_dir", str(tmp_path / "run")]) == USER_ERROR
    assert "run python search.py first" in error_line(capsys.readouterr().err)
