"""What the search benchmarks share: search.py commands, a teacher trained once, reading a study back.

Used by ``search_throughput.py`` and ``kill_test.py``. Every command is the real ``python
search.py`` in a subprocess, on a config (the quickstart by default) with a teacher checkpoint, so
no measured run trains a teacher.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import optuna

from das.errors import DasError
from das.storage import make_storage

# The checkout that holds these benchmarks: its search.py is the one measured.
ROOT = Path(__file__).resolve().parent.parent


def search_command(config: str, teacher_checkpoint: str | None, run_dir: Path, trials: int, extra: str = "",
                   storage: str | None = None, study_name: str = "das", workers: int = 1, first_worker: int = 0) -> list[str]:
    """The ``python search.py`` command line for one run."""
    cmd = [sys.executable, str(ROOT / "search.py"), "--config", config, "--run_dir", str(run_dir), "--study.trials", str(trials),
           "--workers", str(workers), "--first_worker", str(first_worker), "--study.study_name", study_name]
    if teacher_checkpoint:
        cmd += ["--teacher.checkpoint", teacher_checkpoint]
    if storage:
        cmd += ["--study.storage", storage]
    return cmd + shlex.split(extra)


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` from the checkout, its output to ``log``."""
    out = log.open("w")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(os.environ))


def prepare_teacher(config: str, checkpoint: str | None, work: Path, extra: str = "") -> str | None:
    """``checkpoint``, or the config's teacher trained once by a one-trial search in ``work/teacher_run`` (reused)."""
    if checkpoint:
        return checkpoint
    run = work / "teacher_run"
    path = run / "teacher" / "teacher.pt"
    if not path.is_file():
        cmd = search_command(config, None, run, 1, extra)
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0 or not path.is_file():
            raise DasError(f"training the teacher failed ({' '.join(cmd)}): {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return str(path)


_STORAGES: dict[tuple[str | None, str], optuna.storages.BaseStorage] = {}


def load_trials(storage: str | None, run_dir: Path, study_name: str = "das") -> list[optuna.trial.FrozenTrial]:
    """The study's trials (the run dir's journal unless ``storage``); [] before the study exists."""
    if storage is None and not (run_dir / "study.journal").exists():
        return []
    key = (storage, str(run_dir))
    if key not in _STORAGES:  # one storage each: a journal is read on from where it was, a database keeps its connection
        _STORAGES[key] = make_storage(storage, run_dir)
    try:
        return optuna.load_study(study_name=study_name, storage=_STORAGES[key]).get_trials(deepcopy=False)
    except KeyError:
        return []


def scored(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials that scored an architecture (COMPLETE, tagged ``scored``)."""
    return [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("kind") == "scored"]


def worker_pid(trial: optuna.trial.FrozenTrial) -> int | None:
    worker = trial.user_attrs.get("worker")
    return int(worker.rpartition(":")[2]) if worker else None
