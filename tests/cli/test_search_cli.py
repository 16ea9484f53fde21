"""search.py as a user runs it: one-line mistakes (exit 1), Ctrl-C (130), kill -9 and shared run dirs.

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
from das.search.study import journal_storage, release_dead_trials
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
