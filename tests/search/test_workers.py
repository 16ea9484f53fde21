"""--workers N and crashes, in this process: the worker plan, and a dead worker's trial retried (its real processes: tests/cli)."""

from __future__ import annotations

import socket
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

import das.search.ledger as ledger_module
from das.errors import DasError
from das.search import run_search
from das.search.ledger import RETRY_OF, SCORED, Ledger, tally
from das.storage import journal_storage
from das.search.study import release_dead_trials
from das.search.workers import sampler_seeds, thread_shares, worker_devices
from das.spaces import create_space
from tests.tinysearch import search_args


def dead_worker() -> str:
    """A ``host:pid`` tag naming a process of this machine that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}"


def journal_study(run_dir) -> optuna.Study:
    run_dir.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(study_name="das", storage=journal_storage(run_dir / "study.journal"), direction="maximize",
                               load_if_exists=True)


def scoring_trial(study: optuna.Study, worker: str) -> optuna.Trial:
    """A trial left as a worker leaves it mid-scoring: params drawn, architecture claimed as scored, no scores."""
    space = create_space("nb201", C=2, N=1)
    trial = study.ask()
    spec = space.suggest(trial)
    for name, value in {"worker": worker, "key": space.canonical(spec), "arch": spec.to_json(), "kind": SCORED, "params": 1}.items():
        trial.set_user_attr(name, value)
    return trial


def test_the_worker_plan_seeds_threads_and_devices() -> None:
    assert sampler_seeds(7, 0, 3) == [7, 8, 9] and sampler_seeds(7, 4, 2) == [11, 12]  # worker 0 is a plain run's seed
    assert thread_shares(8, 3) == [3, 3, 2] and thread_shares(2, 2) == [1, 1] and thread_shares(1, 3) == [1, 1, 1]
    assert worker_devices("cpu", 2) == ["cpu", "cpu"]


@pytest.mark.parametrize("flags, said", [({"workers": 0}, "workers=0 must be a positive integer"),
                                         ({"first_worker": -1}, "first_worker=-1 must be an integer >= 0")], ids=["workers", "first_worker"])
def test_a_worker_count_that_is_not_one_is_refused_before_any_work(tmp_path, teacher_ckpt, flags, said) -> None:
    with pytest.raises(DasError, match=said):
        run_search(**search_args(tmp_path / "run", teacher_ckpt, 2), **flags)
    assert not (tmp_path / "run").exists()


def test_more_workers_than_trials_left_is_clamped_in_one_line(tmp_path, teacher_ckpt) -> None:
    lines: list[str] = []
    args = search_args(tmp_path / "run", teacher_ckpt, 1)
    args["log"] = lines.append
    summary = run_search(**args, workers=4)  # one trial left: one worker, which is this process
    assert summary["scored"] == 1
    assert [line for line in lines if "workers=4" in line] == ["search: workers=4 is more than the 1 architecture(s) left to score; starting 1"]


@pytest.mark.parametrize("death", ["killed", "killed_after_scoring", "heartbeat"])
def test_the_architecture_a_dead_worker_was_scoring_is_scored_by_the_next_trial(tmp_path, teacher_ckpt, death) -> None:
    """``killed``: its process is gone (journal, this machine: judged by its pid); ``killed_after_scoring``: gone after
    its scores were stored, before it was told complete (it never finished, so it is retried, not lost); ``heartbeat``:
    Optuna failed it (RDB)."""
    run = tmp_path / "run"
    study = journal_study(run)
    dead = scoring_trial(study, dead_worker())
    if death == "killed_after_scoring":
        dead.set_user_attr("scores", {"diswot": 1.0})
    if death == "heartbeat":
        study.tell(dead, state=TrialState.FAIL)  # what fail_stale_trials leaves: FAIL, claimed as scored, no scores
    key, params = dead.user_attrs["key"], dead.params
    summary = run_search(**search_args(run, teacher_ckpt, 3))
    assert summary["scored"] == 3  # the dead trial is not counted
    trials = journal_study(run).get_trials(deepcopy=False)
    assert trials[dead.number].state == (TrialState.FAIL if death == "heartbeat" else TrialState.PRUNED)
    retry = next(t for t in trials if t.user_attrs.get(RETRY_OF) == dead.number)
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["kind"] == SCORED and "scores" in retry.user_attrs
    assert retry.user_attrs["key"] == key and retry.params == params  # the same architecture, drawn with the same params
    assert retry.number == dead.number + 1  # the very next trial
    scored = [t.user_attrs["key"] for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("kind") == SCORED]
    assert len(scored) == len(set(scored)) == 3


def test_the_last_place_waits_for_a_running_scored_trial_that_then_dies(tmp_path, monkeypatch) -> None:
    """A trial one past the count does not give up while a scored trial before it still runs: that one's worker may die."""
    monkeypatch.setattr(ledger_module, "RELEASE_EVERY_S", 0.1)
    study = journal_study(tmp_path)
    scoring_trial(study, dead_worker())  # claimed the study's only place, then its worker died
    ledger = Ledger(1, lambda t: t.user_attrs.get("key"), release=release_dead_trials)
    late = study.ask()
    late.set_user_attr("key", "another-arch")
    claim = ledger.claim(late, "another-arch")
    assert claim.kind == SCORED and claim.last  # it takes the dead trial's place
    assert tally(study, ledger.key_of).scored == 0  # nothing finished yet; the dead trial counts for nothing


def test_ctrl_c_in_one_worker_interrupts_the_others(tmp_path) -> None:
    """The parent's wait: a worker that exits 130 on its own gets the others a SIGINT (light stand-in processes, no torch)."""
    from types import SimpleNamespace

    from das.search.workers import Outcome, _wait, _Worker

    sleeper = ("import signal, sys, time\n"
               "signal.signal(signal.SIGINT, lambda *_: sys.exit(130))\n"
               "print('ready', flush=True)\n"
               "time.sleep(60)\n")
    workers = [_Worker(i, i, 1, "cpu", tmp_path) for i in range(3)]
    for w, code in zip(workers, ("import sys; sys.exit(130)", sleeper, sleeper)):
        w.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    for w in workers[1:]:
        assert w.proc.stdout.readline() == "ready\n"  # its handler is in place
    study = optuna.create_study()
    prepared = SimpleNamespace(optuna_study=study, study=SimpleNamespace(trials=5), before=tally(study, lambda t: None),
                               key_of=lambda t: None)
    outcome = Outcome()
    _wait(workers, prepared, outcome, log=lambda *_: None)
    assert outcome.interrupted and not outcome.failed
    assert [w.proc.returncode for w in workers] == [130, 130, 130]


def test_with_several_gpus_each_worker_gets_its_own_unless_one_is_named(monkeypatch) -> None:
    """The plan only (this machine has no GPU): worker i on cuda:i mod count; an explicit cuda:K keeps them all on K."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert worker_devices("auto", 4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert worker_devices("cuda", 2) == ["cuda:0", "cuda:1"]
    assert worker_devices("cuda:1", 2) == ["cuda:1", "cuda:1"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert worker_devices("auto", 2) == ["cuda", "cuda"]
