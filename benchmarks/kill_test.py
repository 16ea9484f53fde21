"""Does a search survive a worker killed at random moments? A 2-worker search, one worker SIGKILLed and restarted.

Two ``python search.py`` commands share one study (the run dir's journal, or PostgreSQL with
``--storage``), worker 0 (``--first_worker 0``) and worker 1 (``--first_worker 1``). Worker 1 is
SIGKILLed ``--kills`` times, each a uniform random ``--kill-after`` seconds after it started its
first trial, and started again; then both run until the study has its ``--trials`` distinct
architectures. Before each kill the study is read: every trial then COMPLETE must still be
COMPLETE at the end, and what worker 1 was doing is recorded (drawing, measuring, scoring,
waiting for another trial's scores, between trials). Reported:

- ``scored`` (distinct architectures scored, must equal ``--trials``) and ``finished`` trials;
- ``scored_twice``: architectures scored by two trials (must be 0);
- ``lost``: trials seen COMPLETE before a kill and not COMPLETE at the end, plus architectures the
  study is short of its count (must be 0);
- ``killed_while_scoring`` and ``retried``: killed trials that had claimed their architecture, and
  those whose architecture was scored again by a later trial (``retried_by_next_trial``: by a trial
  tagged ``retry_of``); ``running_at_end`` (must be 0).

    python -m benchmarks.kill_test --kills 10 --trials 600 --out benchmarks/results/kill_test.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from benchmarks.common import code_version, load_average, machine_info, now_iso, write_json
from benchmarks.pgserver import throwaway_server
from benchmarks.search_bench import ROOT, load_trials, prepare_teacher, scored, search_command, start, worker_pid
from das.cli import guarded
from das.errors import DasError
from das.search.ledger import died_while_scoring

#: Seconds to wait for a restarted worker's first trial, or for the study to finish.
TIMEOUT_S = 600


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"), help="the search config both workers run")
    p.add_argument("--teacher-checkpoint", default=None, help="the teacher's weights; default: train the config's teacher once in --work")
    p.add_argument("--trials", type=int, default=600, help="study.trials: enough that the study outlasts the kills")
    p.add_argument("--kills", type=int, default=10, help="how many times worker 1 is SIGKILLed (and restarted)")
    p.add_argument("--kill-after", default="1,5", help="MIN,MAX seconds after the worker's first trial, uniform")
    p.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    p.add_argument("--storage", default="journal", help="journal (the run dir's), postgres (a throwaway server), or a URL")
    p.add_argument("--extra", default="--study.sampler random", help="more search.py flags for both workers")
    p.add_argument("--work", default=None, help="folder for the run dir and logs (default: a temporary one)")
    p.add_argument("--out", default="benchmarks/results/kill_test.json")
    return p.parse_args(argv)


def phase(trial) -> str:
    """What a RUNNING trial's worker was doing, from its tags."""
    kind = trial.user_attrs.get("kind")
    if kind == "scored":
        return "scoring"
    if kind == "duplicate":
        return "waiting for the owner's scores"
    return "measuring or waiting to claim" if "key" in trial.user_attrs else "drawing"


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    low, _, high = args.kill_after.partition(",")
    try:
        low_s, high_s = float(low), float(high or low)
    except ValueError:
        raise DasError(f"--kill-after {args.kill_after!r} must be MIN,MAX seconds") from None
    if not 0 <= low_s <= high_s or args.kills < 1 or args.trials < 2:
        raise DasError(f"need 0 <= MIN <= MAX in --kill-after, --kills >= 1 and --trials >= 2 (got {args.kill_after}, {args.kills}, {args.trials})")
    rng = random.Random(args.seed)
    with contextlib.ExitStack() as stack:
        work = Path(args.work) if args.work else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="das-kill-")))
        work.mkdir(parents=True, exist_ok=True)
        teacher = prepare_teacher(args.config, args.teacher_checkpoint, work, args.extra)
        storage = {"journal": None, "postgres": None}.get(args.storage, args.storage)
        if args.storage == "postgres":
            storage = stack.enter_context(throwaway_server())
        run_dir = work / f"run-{int(time.time())}"

        def command(index: int) -> list[str]:
            return search_command(args.config, teacher, run_dir, args.trials, args.extra, storage=storage, first_worker=index)

        load_start, started, t0 = load_average(), now_iso(), time.perf_counter()
        steady = start(command(0), work / "worker0.log")
        victim = start(command(1), work / "worker1-0.log")
        seen_complete: set[int] = set()
        kills: list[dict[str, Any]] = []
        try:
            for k in range(args.kills):
                deadline = time.monotonic() + TIMEOUT_S
                while not any(worker_pid(t) == victim.pid for t in load_trials(storage, run_dir)):
                    if steady.poll() is not None or victim.poll() is not None:
                        raise DasError(f"a worker ended before kill {k + 1} of {args.kills} (the study is done?): raise --trials; "
                                       f"see the logs in {work}")
                    if time.monotonic() > deadline:
                        raise DasError(f"worker 1 ran no trial within {TIMEOUT_S} s; see {work}")
                    time.sleep(0.2)
                wait = rng.uniform(low_s, high_s)
                time.sleep(wait)
                if victim.poll() is not None:
                    raise DasError(f"worker 1 ended before kill {k + 1} (the study is done?): raise --trials; see {work}")
                trials = load_trials(storage, run_dir)
                seen_complete |= {t.number for t in trials if t.state == TrialState.COMPLETE}
                mine = [t for t in trials if t.state == TrialState.RUNNING and worker_pid(t) == victim.pid]
                os.kill(victim.pid, signal.SIGKILL)
                victim.wait()
                kills.append({"kill": k + 1, "after_s": round(wait, 2), "trial": mine[0].number if mine else None,
                              "doing": phase(mine[0]) if mine else "between trials"})
                print(f"kill {k + 1}/{args.kills}: worker 1 {kills[-1]['doing']} (trial {kills[-1]['trial']})", flush=True)
                victim = start(command(1), work / f"worker1-{k + 1}.log")
            codes = [steady.wait(TIMEOUT_S), victim.wait(TIMEOUT_S)]
        except (DasError, subprocess.TimeoutExpired):
            for proc in (steady, victim):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                    proc.wait(60)
            raise
        seconds = time.perf_counter() - t0
        trials = load_trials(storage, run_dir)
    done = scored(trials)
    keys = [t.user_attrs["key"] for t in done]
    by_number = {t.number: t for t in trials}
    killed = [by_number[k["trial"]] for k in kills if k["trial"] is not None]
    claimed = [t for t in killed if died_while_scoring(t)]  # claimed its architecture and never finished
    later = {t.user_attrs["key"]: t.number for t in done}
    retried = [t for t in claimed if later.get(t.user_attrs["key"], -1) > t.number]
    retry_trials = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs and t.state == TrialState.COMPLETE}
    lost_trials = sorted(n for n in seen_complete if by_number[n].state != TrialState.COMPLETE)
    result = {
        "settings": {"config": args.config, "trials": args.trials, "kills": args.kills, "kill_after_s": [low_s, high_s],
                     "seed": args.seed, "storage": args.storage if args.storage in ("journal", "postgres") else "given URL",
                     "extra": args.extra, "machine": machine_info(), "code": code_version(), "date": started,
                     "load_average_start": load_start, "load_average_end": load_average()},
        "exit_codes": codes,
        "seconds": round(seconds, 1),
        "finished": sum(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in trials),
        "scored": len(set(keys)),
        "scored_twice": len(keys) - len(set(keys)),
        "lost": len(lost_trials) + max(0, args.trials - len(set(keys))),
        "lost_trials": lost_trials,
        "killed_while_scoring": len(claimed),
        "retried": len(retried),
        "retried_by_next_trial": sum(t.number in retry_trials for t in claimed),
        "running_at_end": sum(t.state == TrialState.RUNNING for t in trials),
        "kills_detail": kills,
    }
    result["ok"] = (result["scored"] == args.trials and result["scored_twice"] == 0 and result["lost"] == 0
                    and result["running_at_end"] == 0 and codes == [0, 0])
    write_json(args.out, result)
    print(f"{result['scored']} of {args.trials} scored in {result['finished']} finished trials; scored twice {result['scored_twice']}, "
          f"lost {result['lost']}, killed while scoring {result['killed_while_scoring']}, retried {result['retried']} "
          f"({result['retried_by_next_trial']} by the next trial); running at the end {result['running_at_end']}; "
          f"exit codes {codes}; {'OK' if result['ok'] else 'FAILED'}")
    print(f"wrote {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(guarded(main))
