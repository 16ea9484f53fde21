"""search.py as a user runs it: one-line mistakes (exit 1), Ctrl-C (130), kill -9, shared run dirs and --workers N.

The mistakes run search.py's ``__main__`` in this process (runpy: the same ``sys.exit(guarded(main))``
a shell runs, without 5 s of imports each); the signals and the two-process study use real
processes.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from das.cli import INTERRUPTED, USER_ERROR
from das.storage import journal_storage
from das.search.study import release_dead_trials
from tests.tinynets import TinyNet

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny(tmp_path) -> list[str]:
    """Flags for a search of a few seconds: a saved TinyNet teacher, NB201 C=4 N=1 on 8×8 digits."""
    ckpt = tmp_path / "teacher.pt"
    torch.save(TinyNet().state_dict(), ckpt)
    return [
        "--teacher.spec", "tests.tinynets:TinyNet", "--teacher.checkpoint", str(ckpt), "--data.image_size", "8",
        "--data.batch_size", "16", "--data.augment", "[]", "--space.args", "{C: 4, N: 1}",
        "--study.probe_batch_size", "16", "--study.sampler", "random", "--device", "cpu",
    ]


def run_main(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run search.py's __main__ block with ``argv``; return its exit status and stderr."""
    monkeypatch.setattr(sys, "argv", ["search.py", *argv])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(ROOT / "search.py"), run_name="__main__")
    return exited.value.code, capsys.readouterr().err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]  # tqdm bars aside
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


MISTAKES = {
    # flags after the tiny ones: the named value, and what must be said about it
    "space_args_key": (["--space.args", "{C: 4, N: 1, c: 2}"], ["'c'", "accepted keys: C, N"]),
    "space_args_yaml": (["--space.args", "{C:4}"], ["space.args", "{C: 16, N: 5}"]),
    "storage_scheme": (["--study.storage", "nosuch+driver://ann:hunter2@db.example/das"], ["nosuch+driver://ann:***@db.example/das", "postgresql://"]),
    "storage_form": (["--study.storage", "ann:hunter2@db.example"], ["neither a journal file nor a database URL", "postgresql://"]),
    "storage_postgres": (["--study.storage", "postgres://ann:hunter2@db.example/das"], ["postgres://ann:***@db.example/das", "not postgres://"]),
    "storage_driver": (["--study.storage", "mysql+nosuchdriver://ann:hunter2@db.example/das"], ["mysql+nosuchdriver://ann:***@db.example/das"]),
    # Nothing listens on port 1: the server cannot be reached (refused at once; a silent host fails after 10 s).
    "storage_unreachable": (["--study.storage", "postgresql://ann:hunter2@127.0.0.1:1/das"],
                            ["cannot open study.storage='postgresql://ann:***@127.0.0.1:1/das'"]),
    "workers": (["--workers", "0"], ["workers=0", "positive integer"]),
    "first_worker": (["--first_worker", "-2"], ["first_worker=-2", ">= 0"]),
    "image_size": (["--data.image_size", "2"], ["data.image_size=2", "at least"]),
    "trials": (["--study.trials", "0"], ["study.trials=0", "positive integer"]),
    "max_flops": (["--budget.max_flops", "100"], ["budget.max_flops=100", "smallest candidate"]),
    "max_latency_ms": (["--budget.max_latency_ms", "0"], ["budget.max_latency_ms=0.0", "positive number of milliseconds"]),
    "sampler": (["--study.sampler", "nsga"], ["study.sampler='nsga'", "did you mean 'nsga2'", "accepted: tpe, random, nsga2, grid"]),
    "objectives": (["--study.objectives", "[diswot]"], ["study.objectives=['diswot']", "use study.objective"]),
    "unknown_flag": (["--study.trails", "5"], ["--study.trails", "--help"]),
    "bad_type": (["--study.trials", "many"], ["study.trials", "many"]),
}


@pytest.mark.parametrize("case", MISTAKES, ids=list(MISTAKES))
def test_mistakes_are_one_line_and_exit_1_before_any_work(case, tiny, tmp_path, monkeypatch, capsys) -> None:
    flags, said = MISTAKES[case]
    code, err = run_main(["--run_dir", str(tmp_path / "run"), *tiny, *flags], monkeypatch, capsys)
    line = one_line_error(err)
    assert code == USER_ERROR
    for text in said:
        assert text in line, line
    assert "hunter2" not in err
    assert not (tmp_path / "run" / "leaderboard.csv").exists()


def test_a_run_dir_that_cannot_be_written_is_one_line(tiny, tmp_path, monkeypatch, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a run_dir under a file cannot be created, even by root
    code, err = run_main(["--run_dir", str(blocker / "run"), *tiny], monkeypatch, capsys)
    assert code == USER_ERROR and "is not writable" in one_line_error(err) and str(blocker / "run") in err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, err = run_main(["--run_dir", str(locked), *tiny], monkeypatch, capsys)
        assert code == USER_ERROR and "is not writable" in one_line_error(err)


# --------------------------------------------------------------------------- real processes


def start(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "search.py", *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def trials(run_dir: Path) -> list[optuna.trial.FrozenTrial]:
    if not (run_dir / "study.journal").exists():
        return []
    try:
        return optuna.load_study(study_name="das", storage=journal_storage(run_dir / "study.journal")).trials
    except KeyError:  # not created yet
        return []


def wait_for(run_dir: Path, complete: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while sum(t.state == TrialState.COMPLETE for t in trials(run_dir)) < complete:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the search made no progress"
        time.sleep(0.2)


def test_user_error_in_a_real_process_is_one_line_without_the_password(tiny, tmp_path) -> None:
    proc = start(["--run_dir", str(tmp_path / "run"), *tiny, "--study.storage", "postgresql://ann:hunter2@localhost:1/das"])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == USER_ERROR
    assert "postgresql://ann:***@localhost:1/das" in one_line_error(err) and "hunter2" not in err


def test_rerun_after_kill_9_continues_and_ctrl_c_exits_130_with_results(tiny, tmp_path) -> None:
    run = tmp_path / "run"
    argv = ["--run_dir", str(run), *tiny, "--study.trials", "100000"]
    killed = start(argv)
    wait_for(run, 2, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    before = len(trials(run))

    rerun = start(argv)  # must go on (the journal lock died with its holder), then stop on Ctrl-C
    wait_for(run, before + 2, rerun, timeout=60)
    rerun.send_signal(signal.SIGINT)
    out, err = rerun.communicate(timeout=60)
    assert rerun.returncode == INTERRUPTED, err
    assert "Traceback" not in err and "interrupted" in err + out
    summary = json.loads((run / "search_summary.json").read_text())
    assert summary["interrupted"] and summary["trials"] >= before + 1
    assert (run / "leaderboard.csv").read_text().count("\n") >= summary["distinct_archs"] + 1
    # A kill or Ctrl-C can land between Optuna's creating a trial and das's tagging it with its
    # process; such an untagged trial stops counting 5 s after its creation, at the next look.
    time.sleep(5)
    study = optuna.load_study(study_name="das", storage=journal_storage(run / "study.journal"))
    release_dead_trials(study)
    assert not [t for t in trials(run) if t.state == TrialState.RUNNING], "a trial of a dead process is still counted as running"


def test_two_processes_together_score_exactly_study_trials_distinct_architectures(tiny, tmp_path) -> None:
    run = tmp_path / "run"
    # A budget that rejects some cells, so both processes also record unscored (uncounted) trials.
    argv = ["--run_dir", str(run), *tiny, "--study.trials", "24", "--budget.max_params", "9000"]
    procs = [start(argv) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    done = trials(run)
    scored = [t for t in done if t.state in (TrialState.COMPLETE, TrialState.FAIL) and t.user_attrs.get("kind") == "scored"]
    assert len(scored) == 24 == len({t.user_attrs["key"] for t in scored})
    assert TrialState.RUNNING not in [t.state for t in done]


# --------------------------------------------------------------------------- --workers N


def worker_pids(run_dir: Path) -> set[int]:
    """The processes that ran the study's trials (their host:pid tags)."""
    return {int(t.user_attrs["worker"].rpartition(":")[2]) for t in trials(run_dir) if "worker" in t.user_attrs}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def scored_keys(done: list[optuna.trial.FrozenTrial]) -> list[str]:
    return [t.user_attrs["key"] for t in done if t.state == TrialState.COMPLETE and t.user_attrs.get("kind") == "scored"]


def test_two_workers_score_exactly_study_trials_once_each_and_write_one_set_of_results(tiny, tmp_path) -> None:
    run = tmp_path / "run"
    proc = start(["--run_dir", str(run), *tiny, "--study.trials", "30", "--budget.max_params", "9000", "--workers", "2"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "search: 2 workers on study 'das'" in out and "sampler seeds 0..1" in out
    done = trials(run)
    keys = scored_keys(done)
    assert len(keys) == 30 == len(set(keys))  # exactly study.trials, none scored twice
    assert len(worker_pids(run)) == 2 and TrialState.RUNNING not in [t.state for t in done]
    summary = json.loads((run / "search_summary.json").read_text())
    assert summary["scored"] == 30 and not summary["interrupted"]
    assert (run / "best_arch.json").is_file() and (run / "plots" / "score_vs_params.png").is_file()
    assert (run / "leaderboard.csv").read_text().count("\n") == summary["distinct_archs"] + 1


def test_a_sigkilled_worker_s_architecture_is_scored_again_and_the_study_reaches_its_count(tiny, tmp_path) -> None:
    run = tmp_path / "run"
    proc = start(["--run_dir", str(run), *tiny, "--study.trials", "40", "--workers", "2"])
    wait_for(run, 3, proc)
    deadline = time.monotonic() + 60
    while not (scoring := [t for t in trials(run) if t.state == TrialState.RUNNING and t.user_attrs.get("kind") == "scored"]):
        assert time.monotonic() < deadline and proc.poll() is None, "no worker was seen scoring"
        time.sleep(0.02)
    victim = scoring[0]
    os.kill(int(victim.user_attrs["worker"].rpartition(":")[2]), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err  # the other worker finished the study
    assert "was killed by SIGKILL" in err
    done = trials(run)
    keys = scored_keys(done)
    assert len(keys) == 40 == len(set(keys)) and TrialState.RUNNING not in [t.state for t in done]
    killed = done[victim.number]
    if killed.state == TrialState.PRUNED:  # (it may have finished in the instant before the kill)
        retries = [t for t in done if t.user_attrs.get("retry_of") == victim.number]
        assert retries, (killed.user_attrs, [(t.number, t.state.name, t.user_attrs.get("kind")) for t in done[victim.number:]])
        retry = retries[0]
        assert retry.user_attrs["key"] == victim.user_attrs["key"] and retry.state == TrialState.COMPLETE
        assert victim.user_attrs["key"] in keys


def test_ctrl_c_stops_every_worker_and_writes_the_results_so_far(tiny, tmp_path) -> None:
    run = tmp_path / "run"
    proc = start(["--run_dir", str(run), *tiny, "--study.trials", "100000", "--workers", "2"])
    deadline = time.monotonic() + 120
    while len(worker_pids(run)) < 2:  # both workers are running trials
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # as the terminal's Ctrl-C reaches search.py (the workers run in their own session)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == INTERRUPTED, err
    assert "Traceback" not in err and "interrupted" in out + err
    summary = json.loads((run / "search_summary.json").read_text())
    assert summary["interrupted"] and summary["scored"] >= 2
    assert not any(alive(pid) for pid in worker_pids(run))
    assert TrialState.RUNNING not in [t.state for t in trials(run)]  # each worker finished or abandoned its trial
