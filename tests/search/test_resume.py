"""A run directory resumes only what compares, survives typos and killed processes, and holds study.trials."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from das.data import DasDataModule
from das.errors import DasError
from das.evaluate import top1_accuracy
from das.search import BudgetConfig, SpaceConfig, StudyConfig, TeacherConfig, run_search
from das.storage import journal_lock, journal_storage
from das.search.study import worker_id
from tests.tinynets import TinyNet


@pytest.fixture
def teacher_ckpt(tmp_path):
    """A TinyNet teacher checkpoint, so no test here trains a teacher."""
    path = tmp_path / "teacher.pt"
    torch.save(TinyNet().state_dict(), path)
    return str(path)


def tiny(run_dir, ckpt, trials, data=None, **study):
    return dict(
        run_dir=run_dir,
        data=DasDataModule(dataset="digits", image_size=8, batch_size=16, augment=[], **(data or {})),
        teacher=TeacherConfig(spec="tests.tinynets:TinyNet", checkpoint=ckpt),
        space=SpaceConfig(name="nb201", args={"C": 4, "N": 1}),
        budget=BudgetConfig(),
        study=StudyConfig(trials=trials, probe_batch_size=16, sampler="random", **({} if "objectives" in study else {"objective": "diswot"}), **study),
        device="cpu",
        log=lambda *_: None,
    )


def load(run_dir) -> optuna.Study:
    return optuna.load_study(study_name="das", storage=journal_storage(run_dir / "study.journal"))


def leaderboard(run_dir) -> list[dict[str, str]]:
    return list(csv.DictReader((run_dir / "leaderboard.csv").open()))


@pytest.mark.parametrize("change", [{"val_fraction": 0.2}, {"seed": 1}], ids=["val_fraction", "seed"])
def test_a_changed_probe_split_is_refused(tmp_path, teacher_ckpt, change) -> None:
    run = tmp_path / "run"
    run_search(**tiny(run, teacher_ckpt, 1))
    (key,) = change
    with pytest.raises(DasError, match=rf"other settings \(data\.{key}: was"):
        run_search(**tiny(run, teacher_ckpt, 2, data=change))


def test_newly_reported_proxies_are_scored_for_every_stored_candidate(tmp_path, teacher_ckpt) -> None:
    run = tmp_path / "run"
    run_search(**tiny(run, teacher_ckpt, 3, report=[]))
    run_search(**tiny(run, teacher_ckpt, 4, report=["diswot_relation", "snip"]))
    rows = leaderboard(run)
    assert len(rows) >= 3 and all(r["diswot_relation"] and r["snip"] for r in rows)
    # The same values a study that reported them from the start gets.
    fresh = tmp_path / "fresh"
    run_search(**tiny(fresh, teacher_ckpt, 3, report=["diswot_relation", "snip"]))
    first = {r["arch"]: r for r in rows}
    common = [r for r in leaderboard(fresh) if r["arch"] in first]
    assert common
    for row in common:
        for name in ("diswot", "diswot_relation", "snip"):
            assert float(first[row["arch"]][name]) == pytest.approx(float(row[name]), rel=1e-5)


def test_a_typo_does_not_poison_the_run_dir(tmp_path, teacher_ckpt) -> None:
    run = tmp_path / "run"
    typo = tiny(run, teacher_ckpt, 2)
    typo["teacher"] = TeacherConfig(spec="tests.tinynets:TinyNett", checkpoint=teacher_ckpt)
    with pytest.raises(DasError, match="did you mean 'TinyNet'"):
        run_search(**typo)
    typo["teacher"] = TeacherConfig(spec="tests.tinynets:TinyNet", checkpoint=str(tmp_path / "nope.pt"))
    with pytest.raises(DasError, match="does not exist"):
        run_search(**typo)
    assert run_search(**tiny(run, teacher_ckpt, 2))["scored"] == 2


def test_impossible_studies_are_refused_before_any_work(tmp_path) -> None:
    args = tiny(tmp_path, None, 0)
    with pytest.raises(DasError, match=r"study.trials=0 must be a positive integer"):
        run_search(**args)
    args = tiny(tmp_path, None, 2)
    args["budget"] = BudgetConfig(max_flops=1000)
    with pytest.raises(DasError, match=r"budget.max_flops=1000 is below the smallest candidate .* FLOPs on 3×8×8"):
        run_search(**args)
    assert not (tmp_path / "teacher").exists()


def test_teacher_accuracy_on_the_test_split_is_reported(tmp_path, teacher_ckpt) -> None:
    args = tiny(tmp_path, teacher_ckpt, 1)
    summary = run_search(**args)
    teacher = TinyNet()
    teacher.load_state_dict(torch.load(teacher_ckpt))
    expected = top1_accuracy(teacher, args["data"].test_dataloader(), "cpu")
    best = json.loads((tmp_path / "best_arch.json").read_text())
    assert best["search"]["teacher"]["test_acc"] == pytest.approx(expected)
    assert json.loads((tmp_path / "search_summary.json").read_text())["teacher_test_acc"] == pytest.approx(expected)
    assert summary["teacher"]["test_acc"] == pytest.approx(expected)


def test_trials_of_live_workers_count_and_of_dead_ones_do_not(tmp_path, teacher_ckpt) -> None:
    run_search(**tiny(tmp_path, teacher_ckpt, 2))
    study = load(tmp_path)
    live = study.ask()  # another worker's trial, still scoring in this (live) process
    live.set_user_attr("worker", worker_id())
    live.set_user_attr("kind", "scored")
    live.set_user_attr("key", "an architecture of its own")
    dead_process = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_process.wait()
    dead = study.ask()  # a worker killed mid-trial
    dead.set_user_attr("worker", f"{worker_id().rpartition(':')[0]}:{dead_process.pid}")
    summary = run_search(**tiny(tmp_path, teacher_ckpt, 5))
    study = load(tmp_path)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.RUNNING) == 1 and study.trials[live.number].state == TrialState.RUNNING
    assert study.trials[dead.number].state == TrialState.PRUNED  # not counted
    scored = [t for t in study.trials if t.state == TrialState.COMPLETE and t.user_attrs["kind"] == "scored"]
    assert len(scored) == 4 == summary["scored"]  # 4 finished + 1 running = 5


def test_a_journal_lock_holder_killed_with_sigkill_blocks_nobody(tmp_path, teacher_ckpt, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = Path("run")  # relative, as users type it: Optuna's symlink lock then dangled and spun forever
    run_search(**tiny(run, teacher_ckpt, 1))
    pid = os.fork()
    if pid == 0:  # child: take the storage's own journal lock, then die holding it
        journal_lock(run / "study.journal").acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)

    def hung(*_):
        raise TimeoutError("the search waited 60 s for a dead process's lock")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        assert run_search(**tiny(run, teacher_ckpt, 2))["scored"] == 2
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_the_teacher_init_scores_differently_and_a_changed_one_is_refused(tmp_path, teacher_ckpt) -> None:
    runs = {}
    for init in ("random", "trained"):
        args = tiny(tmp_path / init, teacher_ckpt, 2)
        args["teacher"] = TeacherConfig(spec="tests.tinynets:TinyNet", checkpoint=teacher_ckpt, init=init)
        run_search(**args)
        runs[init] = [row["diswot"] for row in leaderboard(tmp_path / init)]
    assert runs["random"] != runs["trained"]  # same archs (same seed), other teacher weights
    args = tiny(tmp_path / "random", teacher_ckpt, 2)
    args["teacher"] = TeacherConfig(spec="tests.tinynets:TinyNet", checkpoint=teacher_ckpt, init="trained")
    with pytest.raises(DasError, match=r"teacher\.init: was 'random', now 'trained'"):
        run_search(**args)
    args["teacher"] = TeacherConfig(spec="tests.tinynets:TinyNet", checkpoint=teacher_ckpt, init="pretrained")
    with pytest.raises(DasError, match="'pretrained' is not one of random, trained"):
        run_search(**args)
