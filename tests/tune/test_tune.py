"""train.py's recipe study: its outputs, the recipe it hands the final run, resume after a kill, one-line mistakes."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from das.cli import USER_ERROR, guarded
from das.data import DasDataModule
from das.distill import command as distill_command
from das.distill.losses import LOSSES, LossSpec, register_loss
from das.errors import DasError
from das.storage import journal_storage
from das.tune import command as train
from das.tune.config import TuneConfig, logit_losses
from das.tune.space import RecipeSpace
from das.tune.study import ANCHOR, CONFIGURED, OUTCOME, RECIPE, REFINE, STUDY_NAME, counted, refine_candidate, switch_margin

ROOT = Path(__file__).resolve().parents[2]
#: A tiny student and teacher on 8×8 digits (as tests/cli/test_train_cli.py), no baseline: seconds per run.
TINY = [
    "--model.student", "tests.tinynets:TinyNet", "--model.teacher", "tests.tinynets:wide_tiny_net",
    "--model.teacher_checkpoint", "null", "--model.input_size", "[3, 8, 8]", "--data.image_size", "8",
    "--data.batch_size", "32", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
    "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    "--trainer.max_epochs", "2", "--baseline", "false",
]
#: Four trials of two epochs on 200 training images: the configured recipe and the default anchors 0, 10 and 100.
TUNE = ["--tune.trials", "4", "--tune.epochs", "2", "--tune.train_images", "200"]
#: What a recipe is made of, and every other argument of the module, which the tuned YAML must give back.
MODEL_KEYS = ("student", "teacher", "teacher_checkpoint", "losses", "feature_pairs", "optimizer", "lr", "momentum", "nesterov",
              "weight_decay", "betas", "schedule", "warmup_epochs", "milestones", "gamma", "input_size")


def load(run: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY_NAME, storage=journal_storage(run / "tune" / "study.journal"))


def plain(value: object) -> object:
    return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value


@pytest.fixture
def fitted(monkeypatch) -> list[dict]:
    """The hyperparameters of every module train.py fits, in order."""
    seen: list[dict] = []
    fit = distill_command.fit_and_test

    def spy(module, data, trainer, ckpt_path=None):
        seen.append(dict(module.hparams))
        return fit(module, data, trainer, ckpt_path)

    monkeypatch.setattr(distill_command, "fit_and_test", spy)
    return seen


@pytest.fixture
def no_test_split(monkeypatch) -> None:
    """Reading the test split fails the test: a trial must never see it."""
    subset = DasDataModule.subset

    def guarded_subset(self, split, indices=None):
        assert split != "test", "the recipe study read the test split"
        return subset(self, split, indices)

    def no_loader(self):
        raise AssertionError("the recipe study read the test split")

    monkeypatch.setattr(DasDataModule, "subset", guarded_subset)
    monkeypatch.setattr(DasDataModule, "test_dataloader", no_loader)


def test_the_study_writes_every_output_and_the_final_run_trains_its_best_recipe(tmp_path, fitted, capsys, one_thread) -> None:
    run = tmp_path / "run"
    # The temperature is left as model.losses sets it (null): tuned.yaml must say so too.
    unguarded = ["--tune.switch_z", "0"]  # the study's own best; the guard (the default) is checked below
    assert guarded(train.main, [*TINY, *TUNE, *unguarded, "--tune.temperature", "null", "--trainer.default_root_dir", str(run)]) == 0
    held_out = int(re.search(r"judged on (\d+) validation images", capsys.readouterr().out).group(1))
    for name in ("tune/study.journal", "tune/trials.csv", "tune/best.json", "tune/plots/history.png", "tune/plots/importance.png",
                 "tuned.yaml", "results.json", "student.pt"):
        assert (run / name).is_file(), name
    study = load(run)
    finished = [t for t in study.trials if counted(t)]
    assert len(finished) == 4 and all(t.user_attrs[OUTCOME] in ("complete", "pruned") for t in finished)
    # The configured recipe (it lies in the default ranges) is the first trial.
    first = study.trials[0]
    assert first.user_attrs.get(CONFIGURED) and first.params["lr_factor"] == 1.0 and first.params["cosine"] == "on"
    assert first.user_attrs[RECIPE]["losses"] == {"ce": 0.5, "kd": {"weight": 0.5, "temperature": 4.0}, "cosine": {"weight": 1.0, "scale": 1.0}}

    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number))
    results = json.loads((run / "results.json").read_text())
    tuned = results["tune"]
    assert tuned["trial"] == best.number and tuned["val_acc"] == best.value and tuned["fallback"] is None
    assert tuned["recipe"] == best.user_attrs[RECIPE]
    assert tuned["seconds"] > 0 and tuned["final_run_seconds"] > 0 and tuned["trials"]["complete"] == len(complete)
    (final,) = fitted  # the one module fitted is the final run, on the best trial's recipe
    assert LossSpec.from_config(final["losses"]) == LossSpec.from_config(best.user_attrs[RECIPE]["losses"])
    assert final["feature_pairs"] == best.user_attrs[RECIPE]["feature_pairs"] and final["lr"] == best.user_attrs[RECIPE]["lr"]
    rows = (run / "tune" / "trials.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("trial,outcome,val_acc")

    # tuned.yaml round-trips: train.py --config gives the final run's model, without a study.
    again = train.make_cli(["--config", str(run / "tuned.yaml")], instantiate=False).config
    for key in MODEL_KEYS:
        assert plain(again.model[key]) == plain(final[key]), key
    assert again.tune.trials == 0 and again.tune.tuned_for["student"] == "tests.tinynets:TinyNet" and again.tune.temperature is None
    assert all("temperature" not in t.params and t.user_attrs[RECIPE]["losses"]["kd"]["temperature"] == 4.0 for t in finished)

    # Run again, the finished study is read back: no trial is added and the choice is the same.
    assert guarded(train.main, [*TINY, *TUNE, *unguarded, "--tune.temperature", "null", "--trainer.default_root_dir", str(run),
                                "--tune.only", "true"]) == 0
    assert len(load(run).trials) == len(study.trials)
    chosen = json.loads((run / "tune" / "best.json").read_text())
    assert chosen["trial"] == best.number and chosen["kept"] is None
    assert chosen["configured_val_acc"] == first.value and chosen["val_images"] == held_out > 0

    # The switching guard is not a study setting: the same study, read back under the default z = 1.645, keeps the
    # configured recipe unless the best beats it by more than the margin; under z = 1000 it keeps it (none can).
    assert TuneConfig().switch_z == 1.645
    assert guarded(train.main, [*TINY, *TUNE, "--tune.temperature", "null", "--trainer.default_root_dir", str(run), "--tune.only", "true"]) == 0
    switches = best.value - first.value > switch_margin(best.value, first.value, held_out, 1.645)
    assert json.loads((run / "tune" / "best.json").read_text())["trial"] == (best.number if switches else first.number)
    assert guarded(train.main, [*TINY, *TUNE, "--tune.temperature", "null", "--trainer.default_root_dir", str(run), "--tune.only", "true",
                                "--tune.switch_z", "1000"]) == 0
    assert len(load(run).trials) == len(study.trials)
    guarded_choice = json.loads((run / "tune" / "best.json").read_text())
    assert guarded_choice["trial"] == first.number and guarded_choice["recipe"] == first.user_attrs[RECIPE]
    assert (guarded_choice["kept"] is None) == (best.number == first.number)
    if best.number != first.number:
        assert "so the configured recipe is kept" in capsys.readouterr().out


def test_the_switch_margin_is_z_standard_errors_of_a_difference_of_two_proportions() -> None:
    # 28.4% against 28.2% on 1,000 images: sqrt((0.284*0.716 + 0.282*0.718) / 1000) = 0.020145; x 1.645 x 100 = 3.314 points.
    assert switch_margin(28.4, 28.2, 1000, 1.645) == pytest.approx(3.3139, abs=1e-3)
    assert switch_margin(50.0, 50.0, 400, 2.0) == pytest.approx(200 * (0.5 / 400) ** 0.5)
    assert switch_margin(40.0, 30.0, 1000, 0.0) == 0.0


def test_a_killed_trial_is_run_again_finished_ones_are_kept_and_no_trial_reads_the_test_split(tmp_path, no_test_split, one_thread) -> None:
    run = tmp_path / "run"
    only = [*TINY, "--trainer.default_root_dir", str(run), "--tune.epochs", "2", "--tune.train_images", "200", "--tune.only", "true"]
    assert guarded(train.main, [*only, "--tune.trials", "2"]) == 0
    before = {t.number: (t.params, t.value, t.user_attrs[OUTCOME]) for t in load(run).trials}
    assert len(before) == 2 and not (run / "results.json").exists()  # tune.only: no final run

    # A process killed in its trial: it left the trial RUNNING, tagged with its (now dead) pid.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = load(run)
    victim = study.ask()
    victim.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}")

    assert guarded(train.main, [*only, "--tune.trials", "4"]) == 0
    after = load(run).trials
    assert {t.number: (t.params, t.value, t.user_attrs[OUTCOME]) for t in after if t.number in before} == before
    lost = after[victim.number]
    assert lost.state == TrialState.PRUNED and OUTCOME not in lost.user_attrs  # released, not counted
    assert sum(counted(t) for t in after) == 4
    assert "lost" in (run / "tune" / "trials.csv").read_text()


def test_every_trial_diverging_falls_back_to_the_configured_recipe(tmp_path, fitted, capsys, one_thread) -> None:
    run = tmp_path / "run"
    argv = [*TINY, *TUNE, "--tune.trials", "2", "--tune.lr_factor", "[1e30, 1e31]", "--trainer.default_root_dir", str(run)]
    assert guarded(train.main, argv) == 0
    out = capsys.readouterr().out
    assert "every one of the 2 trials diverged" in out and "the configured recipe is kept" in out
    assert all(t.user_attrs[OUTCOME] == "diverged" for t in load(run).trials)
    tuned = json.loads((run / "results.json").read_text())["tune"]
    assert tuned["trial"] is None and tuned["fallback"].startswith("every one of the 2 trials diverged")
    assert fitted[0]["lr"] == 0.05 and not (run / "tuned.yaml").exists()


BAD_TUNE = [
    (["--tune.trials", "-1"], "tune.trials=-1 must be an integer >= 0"),
    (["--tune.trials", "2", "--tune.lr_factor", "[4, 0.25]"], "tune.lr_factor=[4, 0.25] is inverted"),
    (["--tune.trials", "2", "--tune.cosine_scale", "[5, 5]"], "tune.cosine_scale=[5, 5] is an empty range"),
    (["--tune.trials", "2", "--tune.temperature", "[0, 4]"], "tune.temperature=[0, 4]: both ends must be > 0"),
    (["--tune.trials", "2", "--tune.logit_weight", "[0.5, 1.0]"], "tune.logit_weight=[0.5, 1]: both ends must be strictly between 0 and 1"),
    (["--tune.trials", "2", "--tune.logit_losses", "[]"], "tune.logit_losses=[] must be a non-empty list"),
    (["--tune.trials", "2", "--tune.logit_losses", "[kdd]"], "'kdd' is not a registered loss that reads the teacher's logits: did you mean 'kd'"),
    (["--tune.trials", "2", "--tune.logit_losses", "[cosine]"], "'cosine' is not a registered loss that reads the teacher's logits"),
    (["--tune.trials", "2", "--tune.feature_pairs", "[final, final]"], "names a choice twice"),
    (["--tune.trials", "2", "--tune.pruner", "medain"], "did you mean 'median'?"),
    (["--tune.trials", "2", "--tune.switch_z", "-1"], "tune.switch_z=-1 must be a finite number >= 0"),
    (["--tune.trials", "2", "--tune.anchors", "[0, 5000]"], "tune.anchors: 5000 is outside tune.cosine_scale [0.1, 1000]"),
    (["--tune.trials", "2", "--tune.anchors", "[0]", "--tune.cosine_off", "false"], "tune.anchors holds 0 (the cosine term off)"),
    (["--tune.trials", "2", "--tune.anchors", "[10, 10]"], "tune.anchors=[10.0, 10.0] names a scale twice"),
    (["--tune.trials", "2", "--tune.anchors", "[-1]"], "tune.anchors=[-1.0] must be a list of cosine scales >= 0"),
    (["--tune.trials", "2", "--tune.anchors", "[10]", "--tune.cosine_scale", "null"], "tune.anchors=[10.0] needs a tune.cosine_scale range"),
    (["--tune.trials", "2", "--tune.refine", "-1"], "tune.refine=-1 must be an integer >= 0"),
    (["--tune.trials", "2", "--data.val_fraction", "0"], "but data.val_fraction=0"),
    (["--tune.trials", "2", "--model.teacher", "null"], "model.teacher is null"),
    (["--tune.trials", "2", "--data.val_fraction", "0.001"], "holds out 0 of the 1438 training images"),
]


@pytest.mark.parametrize(("flags", "expected"), BAD_TUNE, ids=[" ".join(f) for f, _ in BAD_TUNE])
def test_a_bad_tune_setting_is_one_line_exit_1_and_writes_nothing(flags, expected, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    code = guarded(train.main, [*TINY, "--tune.epochs", "2", "--trainer.default_root_dir", str(run), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == USER_ERROR and len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not (run / "tune").exists() and not (run / "results.json").exists()


def test_tune_trials_0_is_off_and_nothing_to_tune_is_refused() -> None:
    assert not TuneConfig().on and TuneConfig(trials=0, lr_factor=[3.0, 1.0]).trials == 0  # off: its ranges are not read
    with pytest.raises(DasError, match="nothing is tuned"):
        TuneConfig(trials=3, logit_weight=None, temperature=None, cosine_scale=None, feature_pairs=["stages"], lr_factor=None)


def test_any_registered_logit_loss_may_be_a_candidate() -> None:
    with LOSSES.temporary():
        @register_loss("logit_test")
        def _logit_test(student_logits, teacher_logits, *, temperature: float = 2.0):
            return (student_logits - teacher_logits).pow(2).mean()

        assert {"kd", "logit_test"} <= set(logit_losses()) and "ce" not in logit_losses()
        assert TuneConfig(trials=2, logit_losses=["kd", "logit_test"]).logit_losses == ["kd", "logit_test"]
    assert "logit_test" not in logit_losses()


def test_a_tuned_recipe_is_refused_for_another_student_or_teacher(tmp_path, capsys) -> None:
    recipe = tmp_path / "tuned.yaml"
    recipe.write_text(yaml.safe_dump({"tune": {"tuned_for": {"student": "tests.tinynets:TinyNet", "arch": None,
                                                             "teacher": "tests.tinynets:wide_tiny_net"}}}))
    base = [*TINY, "--config", str(recipe), "--trainer.default_root_dir", str(tmp_path / "run")]
    for flags, expected in ((["--model.student", "tests.tinynets:wide_tiny_net"], "was tuned for student tests.tinynets:TinyNet, not model.student"),
                            (["--model.teacher", "tests.tinynets:TinyNet"], "was tuned with teacher 'tests.tinynets:wide_tiny_net'")):
        code = guarded(train.main, [*base, *flags])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == USER_ERROR and len(err) == 1 and expected in err[0], err
    # A searched student is identified by its architecture, not its path: a rewritten best_arch.json is another student.
    from das.tune.command import check_tuned_for, tuned_for

    arch = tmp_path / "best_arch.json"
    cell = "|nor_conv_1x1~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    arch.write_text(json.dumps({"space": "nb201", "space_args": {"C": 4, "N": 1}, "choices": {"arch": cell}}))
    recorded = tuned_for(str(arch), "resnet20")
    check_tuned_for(recorded, str(arch), "resnet20")
    arch.write_text(json.dumps({"space": "nb201", "space_args": {"C": 4, "N": 1}, "choices": {"arch": cell.replace("nor_conv_1x1", "none")}}))
    with pytest.raises(DasError, match="was tuned for student"):
        check_tuned_for(recorded, str(arch), "resnet20")


def test_a_study_is_not_resumed_under_other_settings(tmp_path, capsys, one_thread) -> None:
    run = tmp_path / "run"
    argv = [*TINY, "--trainer.default_root_dir", str(run), "--tune.trials", "1", "--tune.train_images", "200", "--tune.only", "true"]
    assert guarded(train.main, [*argv, "--tune.epochs", "1"]) == 0
    code = guarded(train.main, [*argv, "--tune.epochs", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == USER_ERROR and len(err) == 1 and "was run with other settings (tune.epochs: was 1, now 2)" in err[0], err


# --------------------------------------------------------------------------- real processes


def start(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "train.py", *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(run: Path) -> list[optuna.trial.FrozenTrial]:
    if not (run / "tune" / "study.journal").exists():
        return []
    try:
        return [t for t in load(run).trials if counted(t)]
    except KeyError:  # not created yet
        return []


def test_kill_9_loses_no_finished_trial_and_two_processes_share_the_rest(tmp_path) -> None:
    """A run killed mid-study; then a full run and a tune.only process share the rest of the study; the full run trains its best."""
    run = tmp_path / "run"
    slow = ["--model.student", "tests.tinynets:SlowTinyNet"]  # 20 ms a training step: the kill lands inside the study
    argv = [*TINY, *slow, "--trainer.default_root_dir", str(run), "--tune.trials", "8", "--tune.epochs", "2", "--tune.train_images", "200",
            "--tune.switch_z", "0"]  # the final run trains the study's own best
    killed = start(argv)
    deadline = time.monotonic() + 120
    while len(finished(run)) < 2:
        assert killed.poll() is None, killed.communicate()
        assert time.monotonic() < deadline, "the study made no progress"
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    kept = {t.number: (t.params, t.value, t.user_attrs[OUTCOME]) for t in finished(run)}
    assert 2 <= len(kept) < 8

    final, helper = start(argv), start([*argv, "--tune.only", "true"])
    out, err = final.communicate(timeout=180)
    assert final.returncode == 0, err
    _, helper_err = helper.communicate(timeout=180)
    assert helper.returncode == 0, helper_err
    done = finished(run)
    assert len(done) == 8 and {t.number: (t.params, t.value, t.user_attrs[OUTCOME]) for t in done if t.number in kept} == kept
    workers = {t.user_attrs["worker"] for t in done}
    assert len(workers) >= 2  # the killed process's trials and the rerun's
    best = max((t for t in done if t.state == TrialState.COMPLETE), key=lambda t: (t.value, -t.number))
    assert json.loads((run / "results.json").read_text())["tune"]["trial"] == best.number


def test_the_guard_keeps_the_configured_trial_within_the_margin_and_switches_beyond_it(tmp_path) -> None:
    """RecipeStudy.result on hand-made trials: 30.0 vs 29.0 on 1,000 images is within 3.35 points (kept); 40.0 vs 29.0 is not."""
    from das.tune.study import COMPLETE, RecipeStudy

    def study(best: float, z: float, where: str) -> RecipeStudy:
        s = RecipeStudy(tmp_path / where, TuneConfig(trials=2, switch_z=z), {"x": 1})
        for value, configured in ((29.0, True), (best, False)):
            attrs = {OUTCOME: COMPLETE, RECIPE: {"lr": 0.05 if configured else 0.1}, "seconds": 1.0, **({CONFIGURED: True} if configured else {})}
            s.study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}, user_attrs=attrs))
        return s

    kept = study(30.0, 1.645, "a").result({"lr": 0.05}, 1000)
    assert kept.trial == 0 and kept.recipe == {"lr": 0.05} and kept.val_acc == 29.0 and "within 3.35" in kept.kept
    switched = study(40.0, 1.645, "b").result({"lr": 0.05}, 1000)
    assert switched.trial == 1 and switched.recipe == {"lr": 0.1} and switched.kept is None and switched.configured_val_acc == 29.0
    unguarded = study(30.0, 0.0, "c").result({"lr": 0.05}, 1000)
    assert unguarded.trial == 1 and unguarded.kept is None


DEFAULT_LOSSES = {"ce": 0.5, "kd": {"weight": 0.5, "temperature": 4.0}, "cosine": {"weight": 1.0, "scale": 1.0}}


def test_an_anchor_is_the_configured_recipe_with_only_the_cosine_scale_changed() -> None:
    space = RecipeSpace(TuneConfig(trials=6, anchors=[0, 1, 25]), DEFAULT_LOSSES, "stages", 0.05)
    base = space.default_params()
    anchors = dict(space.anchor_params())
    assert list(anchors) == [0.0, 25.0]  # scale 1 is the configured recipe itself: trial 0
    off, on = anchors[0.0], anchors[25.0]
    assert off == {k: v for k, v in base.items() if k not in ("cosine_scale", "feature_pairs")} | {"cosine": "off"}
    assert on == base | {"cosine_scale": 25.0}
    assert space.recipe(off) == {"losses": {"ce": 0.5, "kd": {"weight": 0.5, "temperature": 4.0}}, "feature_pairs": "stages", "lr": 0.05}
    assert space.recipe(on)["losses"]["cosine"] == {"weight": 1.0, "scale": 25.0} and space.recipe(on)["feature_pairs"] == "stages"
    # The configured recipe without a cosine term: an anchor turning it on takes model.feature_pairs.
    plain_kd = RecipeSpace(TuneConfig(trials=6, anchors=[0, 400]), {"ce": 0.5, "kd": {"weight": 0.5, "temperature": 4.0}}, "final", 0.05)
    assert [scale for scale, _ in plain_kd.anchor_params()] == [400.0]
    assert dict(plain_kd.anchor_params())[400.0]["feature_pairs"] == "final"
    # No anchors, or none given: the settings a study was made with before the option existed still read back.
    assert "anchors" not in TuneConfig(trials=2, anchors=None).study_settings() and TuneConfig(trials=2, anchors=[]).anchors is None
    # The default anchors (the tuner v2's): those the ranges leave out are dropped, not refused; given ones are checked.
    assert TuneConfig(trials=2).anchors == [0.0, 10.0, 100.0, 1000.0]
    assert TuneConfig(trials=2, cosine_scale=None).anchors is None and TuneConfig(trials=2, cosine_off=False).anchors == [10.0, 100.0, 1000.0]
    assert TuneConfig(trials=2, cosine_scale=[0.5, 50.0]).anchors == [0.0, 10.0]
    with pytest.raises(DasError, match="100 is outside"):
        TuneConfig(trials=2, cosine_scale=[0.5, 50.0], anchors=[0, 100])
    assert TuneConfig(trials=2, anchors=[0, 10]).study_settings()["anchors"] == [0.0, 10.0]


def study_pruning_every_trial(run: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str]) -> list[optuna.trial.FrozenTrial]:
    """A 2-epoch study (tune.only) under a pruner that stops every trial it is asked about; its trials in order."""
    monkeypatch.setattr(optuna.Trial, "should_prune", lambda self: True)
    argv = [*TINY, "--tune.epochs", "2", "--tune.train_images", "200", *flags, "--tune.only", "true", "--trainer.default_root_dir", str(run)]
    assert guarded(train.main, argv) == 0
    return sorted(load(run).trials, key=lambda t: t.number)


def test_the_anchors_follow_the_configured_trial_in_order_and_fixed_trials_are_never_pruned(tmp_path, monkeypatch, one_thread) -> None:
    """A pruner that stops every trial it is asked about: only the drawn trial is stopped."""
    run = tmp_path / "run"
    trials = study_pruning_every_trial(run, monkeypatch, ["--tune.trials", "4", "--tune.anchors", "[0, 100]", "--tune.refine", "0"])
    assert [t.user_attrs.get(CONFIGURED, False) for t in trials] == [True, False, False, False]
    assert [t.user_attrs.get(ANCHOR) for t in trials] == [None, 0.0, 100.0, None]
    assert "cosine" not in trials[1].user_attrs[RECIPE]["losses"] and trials[2].user_attrs[RECIPE]["losses"]["cosine"]["scale"] == 100.0
    assert [t.user_attrs[OUTCOME] for t in trials] == ["complete", "complete", "complete", "pruned"]
    assert [t.user_attrs["epochs"] for t in trials] == [2, 2, 2, 1]
    rows = (run / "tune" / "trials.csv").read_text().splitlines()
    assert rows[0].split(",")[5:7] == ["configured", "anchor"] and rows[2].split(",")[6] == "0.0"


def test_refinement_bisects_towards_the_better_neighbour_of_the_best_scale_and_stops_at_the_ratio() -> None:
    """refine_candidate by hand, on R1's seed-0 anchors (validation accuracy after 5 epochs)."""
    line = {1.0: 41.2, 10.0: 44.3, 100.0: 50.3, 1000.0: 44.9}
    assert refine_candidate(line) == 316.2  # √(100 · 1000): 1000 (44.9) scores above 10 (44.3)
    assert refine_candidate(line | {316.2: 49.0}) == 177.8  # best still 100; 316.2 (49.0) is its better neighbour now
    assert refine_candidate(line | {316.2: 52.0}) == 177.8  # 316.2 is best; its neighbours are 100 (50.3) and 1000 (44.9)
    # The best at an end of the line: only inward, never past the anchors.
    assert refine_candidate({1.0: 45.0, 10.0: 44.0, 100.0: 40.0}) == 3.162
    assert refine_candidate({1.0: 30.0, 10.0: 44.0, 100.0: 40.0, 1000.0: 50.0}) == 316.2
    # Ties: the smaller scale is best, and its left neighbour is tried first.
    assert refine_candidate({1.0: 40.0, 10.0: 40.0, 100.0: 40.0}) == 3.162
    assert refine_candidate({1.0: 40.0, 10.0: 45.0, 100.0: 40.0}) == 3.162
    # A midpoint within 1.2 of a tried scale is not run; the other side is, then nothing.
    assert refine_candidate({1.0: 30.0, 9.0: 44.0, 10.0: 45.0, 100.0: 40.0}) == 31.62  # √90 lies within 1.2 of 9
    assert refine_candidate({1.0: 45.0, 1.15: 30.0, 10.0: 44.0}) is None  # √1.15 lies within 1.2 of 1
    # Running trials hold their place but do not score; fewer than two scales or no score: nothing.
    assert refine_candidate({1.0: 45.0, 10.0: None, 100.0: 40.0}) == 3.162
    assert refine_candidate({1.0: 45.0}) is None and refine_candidate({1.0: None, 10.0: None}) is None


def test_refinement_trials_follow_the_anchors_bisect_the_line_and_are_never_pruned(tmp_path, monkeypatch, one_thread) -> None:
    """A pruner that stops every trial it is asked about: the configured trial, 2 anchors and 2 refinements finish; the drawn one is stopped."""
    run = tmp_path / "run"
    trials = study_pruning_every_trial(run, monkeypatch, ["--tune.trials", "6", "--tune.anchors", "[10, 100]", "--tune.refine", "2"])
    assert [t.user_attrs.get(ANCHOR) for t in trials] == [None, 10.0, 100.0, None, None, None]
    scales = [t.user_attrs.get(REFINE) for t in trials]
    assert scales[:3] == [None] * 3 and scales[5] is None and None not in scales[3:5]
    line = {1.0: trials[0].value, 10.0: trials[1].value, 100.0: trials[2].value}
    best = max(line, key=lambda s: (line[s], -s))
    others = sorted((s for s in line if s != best and abs(math.log10(s / best)) == 1), key=lambda s: (-line[s], s))
    assert scales[3] == round(math.sqrt(best * others[0]), 3 - math.floor(math.log10(math.sqrt(best * others[0]))))
    assert scales[4] == refine_candidate(line | {scales[3]: trials[3].value})
    for t, scale in zip(trials[3:5], scales[3:5]):
        assert t.user_attrs[RECIPE]["losses"]["cosine"]["scale"] == scale and t.user_attrs[RECIPE]["lr"] == trials[0].user_attrs[RECIPE]["lr"]
        assert {k: v for k, v in t.params.items() if k != "cosine_scale"} == {k: v for k, v in trials[0].params.items() if k != "cosine_scale"}
    assert [t.user_attrs[OUTCOME] for t in trials] == ["complete"] * 5 + ["pruned"]
    rows = (run / "tune" / "trials.csv").read_text().splitlines()
    assert rows[0].split(",")[5:8] == ["configured", "anchor", "refine"] and float(rows[4].split(",")[7]) == scales[3]
    assert TuneConfig(trials=2, refine=3).study_settings()["refine"] == 3 and "refine" not in TuneConfig(trials=2, refine=0).study_settings()
    assert TuneConfig(trials=2).refine == 4  # the tuner v3's default
