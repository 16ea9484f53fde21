"""Several worker processes on one study: ``python search.py --workers N``.

The command's own process (the parent) does everything before the first trial once: the checks,
the teacher (trained once per run directory, under a lock), the teacher's test accuracy, the
ensemble's reference population (saved in the run directory and in the study), a calibration.
Then it starts N workers, each a fresh Python process (:func:`main` of this module) that
prepares the same search, finds all of that done and read back, and runs trials on the shared
study until the :class:`~das.search.ledger.Ledger` says it has its ``study.trials`` distinct
architectures. The parent shows one progress bar (read from the study), waits for every worker
and then writes the one leaderboard, best_arch.json, pareto.json, plots and summary, from the
study as the workers left it. The parent writes them, not "the last worker": only the parent
knows that every worker has ended (a worker that ends first cannot tell whether another died or
is still scoring), and the results of an interrupted run come from the same place.

Each worker:

- samples with its own seed, ``study.seed + i`` for worker index i (counted from
  ``--first_worker``, default 0), so no two workers draw the same sequence; the probe batches and
  every student's initial weights stay seeded by ``study.seed``, so a score does not depend on
  which worker computed it. Worker 0's seed is a single process's, so ``--workers 1`` is the
  plain search;
- runs torch on its share of this process's CPU threads (``torch.get_num_threads()`` split as
  evenly as it goes, at least one each), and on its own GPU when the device is CUDA and several
  are visible (worker i on ``cuda:i mod count``; an explicit ``cuda:K`` keeps them all on K);
- runs in its own session, so the terminal's Ctrl-C reaches the parent only, which passes one
  SIGINT to every worker per Ctrl-C: the first lets each worker finish its trial, a second
  abandons it, as a single process does. A worker that is interrupted by itself (exit 130) makes
  the parent interrupt the others; SIGTERM to the parent counts as a Ctrl-C. A worker whose
  parent dies gets a SIGINT (Linux ``PR_SET_PDEATHSIG``) and stops the same way;
- that dies (``kill -9``, out of memory) leaves its trial RUNNING: the other workers release it
  at their next trial (its ``host:pid`` tag names a dead process) and score its architecture again
  (:mod:`das.search.ledger`). The parent says so in one line and goes on with the rest.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from das.search.checks import resolve_device
from das.search.config import BudgetConfig, CalibrateConfig, SpaceConfig, StudyConfig, TeacherConfig
from das.search.ledger import tally
from das.search.optimize import optimize_here
from das.search.prepare import Prepared, prepare_search
from das.storage import hide_password

#: Exit statuses a worker uses (das.cli's): 0 done, 1 a mistake, 130 interrupted.
DONE, USER_ERROR, INTERRUPTED = 0, 1, 130
#: Seconds between the parent's looks at its workers and the study's progress.
POLL_S = 0.2
#: Seconds the parent waits for its workers to stop after it failed itself, before killing them.
STOP_WAIT_S = 60
#: A worker's command: the import itself is guarded, so a Ctrl-C while torch loads is an exit 130 too.
WORKER_COMMAND = ("import sys\ntry:\n    from das.search.workers import main\nexcept KeyboardInterrupt:\n    sys.exit(130)\n"
                  "sys.exit(main(sys.argv[1:]))")


@dataclass
class WorkerArgs:
    """What a worker needs to prepare the same search as the parent (plain, JSON-able values)."""

    run_dir: str
    data: dict[str, Any]  # DasDataModule's init arguments (its hparams)
    teacher: TeacherConfig
    space: SpaceConfig
    budget: BudgetConfig
    study: StudyConfig
    device: str
    calibrate: CalibrateConfig


@dataclass
class Outcome:
    """How the workers ended: interrupted (Ctrl-C), stopped early (why), and one line per worker that failed."""

    interrupted: bool = False
    stopped: str | None = None
    failed: list[str] = field(default_factory=list)


def sampler_seeds(seed: int, first_worker: int, count: int) -> list[int]:
    """Worker i's sampler seed: ``study.seed + i``, with i counted from ``first_worker``."""
    return [seed + first_worker + i for i in range(count)]


def thread_shares(total: int, count: int) -> list[int]:
    """``total`` CPU threads split over ``count`` workers as evenly as it goes, at least one each."""
    base, extra = divmod(max(1, total), count)
    return [max(1, base + (1 if i < extra else 0)) for i in range(count)]


def worker_devices(device: str, count: int) -> list[str]:
    """Each worker's torch device: its own GPU when the device is CUDA without an index and several are visible."""
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.device_count() > 1:
        return [f"cuda:{i % torch.cuda.device_count()}" for i in range(count)]
    return [str(dev)] * count


def run_workers(prepared: Prepared, args: WorkerArgs, count: int, first_worker: int, log=print) -> Outcome:
    """Start ``count`` workers on ``prepared``'s study, show their progress, and wait for every one of them."""
    study_cfg = args.study
    seeds = sampler_seeds(study_cfg.seed, first_worker, count)
    threads = thread_shares(torch.get_num_threads(), count)
    devices = worker_devices(args.device, count)
    where = "the run dir's study.journal" if study_cfg.storage is None else hide_password(study_cfg.storage)
    share = f"{threads[0]}" if len(set(threads)) == 1 else f"{min(threads)}-{max(threads)}"
    gpus = f", on {', '.join(sorted(set(devices)))}" if devices[0].startswith("cuda") else ""
    log(f"search: {count} workers on study {study_cfg.study_name!r} in {where}: sampler seeds {seeds[0]}..{seeds[-1]} "
        f"(study.seed + worker index), {share} CPU thread(s) each{gpus}")
    outcome = Outcome()
    with tempfile.TemporaryDirectory(prefix="das-workers-") as tmp:
        workers = [_Worker(first_worker + i, seeds[i], threads[i], devices[i], Path(tmp)) for i in range(count)]
        presses = {"n": 0}

        def forward(_signum: int, _frame: object) -> None:
            presses["n"] += 1
            outcome.interrupted = True
            for w in workers:
                w.interrupt()

        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for w in workers:
                if outcome.interrupted:  # Ctrl-C while starting them: start no more
                    break
                w.start(args)
            _wait(workers, prepared, outcome, log)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            _stop_stragglers(workers)
        stops = [w.result().get("stopped") for w in workers]
        outcome.stopped = next((s for s in stops if s), None)
    return outcome


def _wait(workers: list[_Worker], prepared: Prepared, outcome: Outcome, log) -> None:
    """Poll the workers until all have ended; a worker interrupted on its own interrupts the others."""
    study = prepared.optuna_study
    total = prepared.study.trials
    last_look = 0.0
    with tqdm(total=total, initial=min(prepared.before.scored, total), desc="search", unit="arch") as bar:
        while any(w.running for w in workers):
            time.sleep(POLL_S)
            for w in workers:
                code = w.poll()
                if code is None or w.reported:
                    continue
                w.reported = True
                if code in (INTERRUPTED, -signal.SIGINT):  # (-SIGINT: Python dies by the signal when Ctrl-C escapes it)
                    if not outcome.interrupted:
                        outcome.interrupted = True  # Ctrl-C in one worker stops them all
                        for other in workers:
                            other.interrupt()
                elif code != DONE:
                    line = w.why(code)
                    outcome.failed.append(line)
                    going_on = "" if outcome.interrupted else "; the other workers go on, and score again what it was scoring"
                    tqdm.write(f"search: {line}{going_on}", file=sys.stderr)
            if time.monotonic() - last_look > 1.0:
                last_look = time.monotonic()
                bar.n = min(tally(study, prepared.key_of).scored, total)
                bar.refresh()
        bar.n = min(tally(study, prepared.key_of).scored, total)
        bar.refresh()


def _stop_stragglers(workers: list[_Worker]) -> None:
    """Workers still running when the parent leaves early (its own error): stop them as Ctrl-C would, then kill."""
    alive = [w for w in workers if w.running]
    for w in alive:
        w.interrupt()
    deadline = time.monotonic() + STOP_WAIT_S
    for w in alive:
        try:
            w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()
    for w in workers:
        w.join()


class _Worker:
    """One worker process: its command, its relayed output, its exit."""

    def __init__(self, index: int, seed: int, threads: int, device: str, tmp: Path) -> None:
        self.index, self.seed, self.threads, self.device = index, seed, threads, device
        self.payload = tmp / f"worker-{index}.json"
        self.result_path = tmp / f"worker-{index}.result.json"
        self.proc: subprocess.Popen | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self.reported = False
        self._relay: threading.Thread | None = None

    def start(self, args: WorkerArgs) -> None:
        payload = {
            "run_dir": args.run_dir, "data": args.data, "device": self.device, "sampler_seed": self.seed,
            "threads": self.threads, "result": str(self.result_path), "parent": os.getpid(),
            **{name: dataclasses.asdict(getattr(args, name)) for name in ("teacher", "space", "budget", "study", "calibrate")},
        }
        self.payload.write_text(json.dumps(payload))
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
               "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": _python_path()}
        # Its own session: the terminal's Ctrl-C reaches the parent only, which passes it on once.
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER_COMMAND, str(self.payload)], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, start_new_session=True)
        self._relay = threading.Thread(target=self._relay_output, daemon=True)
        self._relay.start()

    def _relay_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip()
            if line.strip():
                self.tail.append(line)
                tqdm.write(f"worker {self.index}: {line}", file=sys.stderr)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def interrupt(self) -> None:
        if self.running:
            try:
                self.proc.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass

    def join(self) -> None:
        if self._relay is not None:
            self._relay.join(timeout=5)

    def why(self, code: int) -> str:
        """One line on how the worker ended badly."""
        self.join()
        pid = self.proc.pid if self.proc is not None else "?"
        if code < 0:
            return f"worker {self.index} (pid {pid}) was killed by {signal.Signals(-code).name}"
        said = next((line for line in reversed(self.tail) if line.startswith("error: ")), None)
        said = said or (self.tail[-1] if self.tail else "no output")
        return f"worker {self.index} (pid {pid}) exited with status {code}: {said}"

    def result(self) -> dict[str, Any]:
        try:
            return json.loads(self.result_path.read_text())
        except (OSError, ValueError):
            return {}


def _python_path() -> str:
    """PYTHONPATH for a worker: the parent's own import paths (search.py's folder, a user's space module), then the inherited one."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    own = [p or os.getcwd() for p in sys.path
           if not any(os.path.realpath(p or ".").startswith(prefix + os.sep) for prefix in prefixes)]
    inherited = os.environ.get("PYTHONPATH")
    return os.pathsep.join([*dict.fromkeys(own), *([inherited] if inherited else [])])


# --------------------------------------------------------------------------- inside a worker


def _die_with_parent(parent: int) -> None:
    """Get a SIGINT when the parent dies (Linux), so an orphaned worker stops as on Ctrl-C."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the prctl
        os.kill(os.getpid(), signal.SIGINT)


def run_worker(payload: dict[str, Any]) -> dict[str, Any]:
    """Prepare the parent's search (everything is read back) and run trials until the study has its count."""
    from das.data import DasDataModule

    configs = {"teacher": TeacherConfig, "space": SpaceConfig, "budget": BudgetConfig, "study": StudyConfig,
               "calibrate": CalibrateConfig}
    cfg = {name: cls(**payload[name]) for name, cls in configs.items()}
    data = DasDataModule(**payload["data"])
    prepared = prepare_search(payload["run_dir"], data, cfg["teacher"], cfg["space"], cfg["budget"], cfg["study"],
                              payload["device"], log=lambda *_: None, calibrate=cfg["calibrate"],
                              sampler_seed=payload["sampler_seed"])
    interrupted = optimize_here(prepared, progress=False) if prepared.remaining else False
    return {"interrupted": interrupted, "stopped": prepared.objective.stopped}


def main(argv: list[str]) -> int:
    payload = json.loads(Path(argv[0]).read_text())
    _die_with_parent(payload["parent"])
    torch.set_num_threads(payload["threads"])
    from das.errors import DasError

    try:
        outcome = run_worker(payload)
    except DasError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        return INTERRUPTED
    Path(payload["result"]).write_text(json.dumps(outcome))
    return INTERRUPTED if outcome["interrupted"] else DONE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
