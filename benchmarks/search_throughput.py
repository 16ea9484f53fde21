"""How many architectures per minute does a search score with 1 and 2 workers (journal) and 2 on PostgreSQL?

Each setup is one real ``python search.py ... --workers W`` command on a fresh run directory (and,
on PostgreSQL, a fresh study), the quickstart by default with a teacher trained once beforehand,
``--trials`` distinct architectures each. Reported per setup:

- ``scored_per_min``: architectures scored per minute between the first trial's start and the last
  trial's end, read from the study (the scoring itself, without the command's start-up);
- ``trials_per_min``: the same for every finished trial (duplicates and over-budget ones too);
- ``wall_s`` and ``startup_s`` (command start to first trial: imports, data, checks; with workers
  the parent's and then the workers' own);

and ``speedup`` = scored_per_min of each setup over the first one's. Timings on a shared machine
are noisy: the load average before and after is recorded. ``postgres`` starts a throwaway server
on loopback (:mod:`benchmarks.pgserver`) unless ``--postgres-url`` names one.

    python -m benchmarks.search_throughput --trials 200 --setups journal:1,journal:2,postgres:2 \\
        --out benchmarks/results/search_throughput.json
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import code_version, load_average, machine_info, now_iso, print_table, write_json
from benchmarks.pgserver import throwaway_server
from benchmarks.search_bench import ROOT, load_trials, prepare_teacher, scored, search_command, start
from das.cli import guarded
from das.errors import DasError


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"), help="the search config every setup runs")
    p.add_argument("--teacher-checkpoint", default=None, help="the teacher's weights; default: train the config's teacher once in --work")
    p.add_argument("--trials", type=int, default=200, help="distinct architectures each setup scores (study.trials)")
    p.add_argument("--setups", default="journal:1,journal:2,postgres:2", help="comma-separated STORAGE:WORKERS, STORAGE journal or postgres")
    p.add_argument("--repeats", type=int, default=1, help="runs of each setup, interleaved; the median is reported")
    p.add_argument("--extra", default="--study.sampler random", help="more search.py flags for every run")
    p.add_argument("--postgres-url", default=None, help="a PostgreSQL database for the postgres setups (default: a throwaway server)")
    p.add_argument("--work", default=None, help="folder for the run dirs and logs (default: a temporary one)")
    p.add_argument("--out", default="benchmarks/results/search_throughput.json")
    return p.parse_args(argv)


def parse_setups(text: str) -> list[tuple[str, int]]:
    setups = []
    for item in text.split(","):
        storage, _, workers = item.strip().partition(":")
        if storage not in ("journal", "postgres") or not workers.isdigit() or int(workers) < 1:
            raise DasError(f"--setups item {item!r} must be STORAGE:WORKERS with STORAGE journal or postgres and WORKERS >= 1")
        setups.append((storage, int(workers)))
    return setups


def one_run(args: argparse.Namespace, teacher: str | None, work: Path, name: str, storage: str | None, workers: int) -> dict[str, Any]:
    run_dir = work / name
    cmd = search_command(args.config, teacher, run_dir, args.trials, args.extra, storage=storage, study_name=name, workers=workers)
    began, t0 = datetime.now(), time.perf_counter()
    proc = start(cmd, work / f"{name}.log")
    code = proc.wait()
    wall = time.perf_counter() - t0
    if code != 0:
        raise DasError(f"{name} exited with status {code}; see {work / f'{name}.log'}")
    trials = [t for t in load_trials(storage, run_dir, name) if t.datetime_complete is not None and t.user_attrs.get("kind")]
    done = scored(trials)
    first = min(t.datetime_start for t in trials)
    span = (max(t.datetime_complete for t in trials) - first).total_seconds()
    return {"run": name, "wall_s": round(wall, 2), "startup_s": round((first - began).total_seconds(), 2), "span_s": round(span, 2),
            "scored": len(done), "distinct": len({t.user_attrs["key"] for t in done}), "trials": len(trials),
            "scored_per_min": round(60 * len(done) / span, 1), "trials_per_min": round(60 * len(trials) / span, 1)}


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    setups = parse_setups(args.setups)
    if args.trials < 2 or args.repeats < 1:
        raise DasError(f"--trials {args.trials} must be at least 2 and --repeats {args.repeats} at least 1")
    with contextlib.ExitStack() as stack:
        work = Path(args.work) if args.work else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="das-throughput-")))
        work.mkdir(parents=True, exist_ok=True)
        teacher = prepare_teacher(args.config, args.teacher_checkpoint, work, args.extra)
        url = args.postgres_url
        if url is None and any(s == "postgres" for s, _ in setups):
            url = stack.enter_context(throwaway_server())
        load_start, started = load_average(), now_iso()
        runs: dict[str, list[dict[str, Any]]] = {f"{s}:{w}": [] for s, w in setups}
        for repeat in range(args.repeats):  # interleaved, so a change in the machine's load hits every setup alike
            for storage, workers in setups:
                name = f"{storage}{workers}r{repeat}-{int(time.time())}"
                result = one_run(args, teacher, work, name, url if storage == "postgres" else None, workers)
                runs[f"{storage}:{workers}"].append(result)
                print(f"{storage}:{workers} (run {repeat + 1}/{args.repeats}): {result['scored_per_min']} scored/min, "
                      f"{result['wall_s']} s in all", flush=True)
    base = None
    summary = {}
    for key, rs in runs.items():
        median = round(statistics.median(r["scored_per_min"] for r in rs), 1)
        base = base or median
        summary[key] = {"scored_per_min": median, "trials_per_min": round(statistics.median(r["trials_per_min"] for r in rs), 1),
                        "wall_s": round(statistics.median(r["wall_s"] for r in rs), 2),
                        "startup_s": round(statistics.median(r["startup_s"] for r in rs), 2),
                        "speedup": round(median / base, 2), "runs": rs}
    result = {
        "settings": {"config": args.config, "teacher_checkpoint": args.teacher_checkpoint, "trials": args.trials,
                     "setups": args.setups, "repeats": args.repeats, "extra": args.extra,
                     "postgres": "throwaway server on 127.0.0.1" if args.postgres_url is None else "given URL",
                     "machine": machine_info(), "code": code_version(), "date": started,
                     "load_average_start": load_start, "load_average_end": load_average()},
        "setups": summary,
    }
    write_json(args.out, result)
    print_table(["setup", "scored/min", "trials/min", "speedup", "wall s", "startup s"],
                [[k, v["scored_per_min"], v["trials_per_min"], v["speedup"], v["wall_s"], v["startup_s"]] for k, v in summary.items()])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
