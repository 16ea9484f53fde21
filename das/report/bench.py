"""The shared machinery of the proxy benchmarks: probe data, the teacher, robust scoring, resume.

The benchmarks under ``benchmarks/`` score hundreds to thousands of untrained networks, which
takes an hour or more on a laptop CPU. Three things matter for that to be trustworthy:

- a proxy that raises or returns a non-finite value on one architecture is *counted and
  reported* as a failure of that proxy, never dropped silently and never allowed to take the
  other proxies of the same architecture down with it;
- every architecture's scores are appended to a CSV as soon as they exist, so an interrupted run
  resumes where it stopped (``--resume``) and gives the same numbers as an uninterrupted one
  (each student is initialised from ``torch.manual_seed(seed)`` right before it is built, so its
  weights do not depend on what was scored before it);
- the settings that change a score (seed, probe data, widths, teacher, proxies) are written at
  the top of that CSV and a resume with different settings is refused.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from das.data import load_dataset, probe_batches
from das.errors import DasError
from das.proxies import DEFAULT_TEACHER_INIT, PROXIES, DisWOTReference, score

Batch = tuple[torch.Tensor, torch.Tensor]

_SETTINGS_PREFIX = "# settings: "
# A non-finite score, whether the benchmark saw it returned or das's score() refused it.
_NONFINITE = re.compile(r"\b(returned|gave) [+-]?(nan|inf)\b")


# --------------------------------------------------------------------------- environment


def machine_info() -> dict[str, Any]:
    """CPU model, core count, OS and library versions, for the settings block of a result."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu or platform.machine(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def code_version() -> dict[str, Any]:
    """The git commit of the checkout, whether it had local changes, and a digest of das's sources.

    Scores depend on the proxy code, so a result names the code that produced it, including
    uncommitted edits (the digest covers every ``das/**/*.py`` as it was when the run started).
    """
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for path in sorted((root / "das").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    info: dict[str, Any] = {"das_sources_sha256": digest.hexdigest()[:16]}
    try:
        git = lambda *a: subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True, timeout=10).stdout.strip()  # noqa: E731
        info["git_commit"] = git("rev-parse", "--short", "HEAD") or None
        info["git_dirty"] = bool(git("status", "--porcelain", "--", "das", "teachers"))
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def set_threads(threads: int) -> int:
    if threads < 1:
        raise DasError(f"--threads {threads} must be at least 1")
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def supports_fused() -> bool:
    """Whether ``das.proxies.score`` takes ``fused=`` (one shared pass set vs one proxy at a time)."""
    return "fused" in inspect.signature(score).parameters


def score_options(fused: bool, seed: int) -> dict[str, Any]:
    """The optional ``score()`` arguments this version of das takes (``fused``, ``seed``)."""
    params = inspect.signature(score).parameters
    options: dict[str, Any] = {}
    if "fused" in params:
        options["fused"] = fused
    if "seed" in params:
        options["seed"] = seed
    return options


# --------------------------------------------------------------------------- inputs


def require_file(path: str | Path, option: str, what: str) -> Path:
    """``path`` as a Path, or a one-line error naming it and the option that gave it."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DasError(f"{option} {path} not found (looked at {p.resolve()}); give {what}")
    return p


def resolve_proxies(spec: str, population: bool = False) -> list[str]:
    """A comma-separated proxy list (or ``all``) checked against the registry.

    Args:
        spec: the ``--proxies`` value.
        population: the benchmark reports population-ranked proxies (``ensemble``) from their
            members' scores; otherwise ``all`` leaves them out and naming one is an error.
    """
    per_arch = [n for n in PROXIES.names() if not PROXIES.get(n).needs_reference]
    everything = PROXIES.names() if population else per_arch
    names = everything if spec.strip() == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise DasError(f"--proxies {spec!r} names no proxy; give e.g. params,flops,diswot or 'all' (registered: {', '.join(PROXIES.names())})")
    seen = set()
    for n in names:
        PROXIES.get(n)  # unknown names fail here, with close matches
        if n in seen:
            raise DasError(f"--proxies lists {n!r} twice; list each proxy once")
        if n not in everything:
            raise DasError(f"--proxies {n!r} ranks against a population, which this benchmark does not build; give per-architecture proxies ({', '.join(per_arch)})")
        seen.add(n)
    return names


def batches_needed(proxies: Sequence[str]) -> int:
    """The most probe batches any of ``proxies`` needs (ZiCo needs 2, most need 1)."""
    return max([PROXIES.get(n).min_batches for n in proxies] + [1])


def load_probe(npz: str | Path, batch_size: int, num_batches: int, seed: int) -> list[Batch]:
    """``num_batches`` seeded, disjoint, normalised minibatches from one ``.npz`` (x uint8 N×H×W×C, y)."""
    path = require_file(npz, "--data", "an .npz with x (uint8 N×H×W×C) and y, e.g. ../shared/data/cifar10/train_jpeg.npz")
    # das's npz loader wants a train and a test file; the probe only reads the train side.
    splits = load_dataset("npz", train_file=path, test_file=path)
    return probe_batches(splits, batch_size=batch_size, num_batches=num_batches, seed=seed, split="train")


def teacher_reference(spec: str, checkpoint: str | Path, batch: Batch, num_classes: int,
                      init: str = DEFAULT_TEACHER_INIT, seed: int = 0) -> DisWOTReference:
    """The DisWOT reference of a teacher on the first probe batch, computed once.

    ``init``: compare with the trained teacher or with a seeded random re-initialisation of its
    architecture (the DisWOT authors' protocol; the checkpoint is then only checked to exist).
    """
    from teachers import create_teacher

    path = require_file(checkpoint, "--teacher-checkpoint", "a trained teacher's weights, e.g. ../shared/data/teachers/cifar10_resnet56.th")
    teacher = create_teacher(spec, checkpoint=str(path), num_classes=num_classes)
    teacher.requires_grad_(False).eval()
    return DisWOTReference.from_teacher(teacher, batch, init=init, seed=seed)


# --------------------------------------------------------------------------- scoring


def score_safely(
    model: nn.Module,
    batches: Sequence[Batch],
    proxies: Sequence[str],
    teacher: DisWOTReference | None = None,
    fused: bool = True,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, str]]:
    """Score ``model`` with every proxy; a failure is recorded per proxy instead of raised.

    All proxies are first computed together (sharing passes). If that call raises, each proxy
    is computed on its own so the failure is charged to the proxy that caused it and the others
    keep their scores. A non-finite score is a failure too.

    Returns:
        ``(values, errors)``: a value per proxy (NaN where it failed) and, for each failed proxy,
        a short description (``"returned nan"`` or the exception's type and message).
    """
    kw = score_options(fused, seed)
    errors: dict[str, str] = {}
    try:
        values = dict(score(model, batches, list(proxies), teacher=teacher, **kw))
    except Exception:  # noqa: BLE001 - charged to the guilty proxy below, never swallowed
        values = {}
        for name in proxies:
            try:
                values[name] = float(score(model, batches, [name], teacher=teacher, **kw)[name])
            except Exception as err:  # noqa: BLE001 - recorded as this proxy's failure
                values[name] = math.nan
                errors[name] = f"{type(err).__name__}: {err}"[:300]
    for name in proxies:
        value = float(values.get(name, math.nan))
        values[name] = value
        if not math.isfinite(value) and name not in errors:
            errors[name] = f"returned {value}"
    return {n: values[n] for n in proxies}, errors


@dataclass
class ScoredArch:
    """One architecture's row of a scores file (``values`` holds only the proxies scored so far)."""

    key: str
    arch: str
    seconds: float
    values: dict[str, float]
    errors: dict[str, str] = field(default_factory=dict)


class ScoresFile:
    """Per-architecture scores as CSV, appended and flushed row by row, resumable and extensible.

    The first line is ``# settings: {json}``: the settings that determine a score (seed, data,
    widths, teacher...). The columns are ``key, arch, seconds, <proxy>..., errors`` (``errors``
    a JSON object, proxy → message); an empty cell is a proxy not scored yet for that arch. A
    row appended again for the same key replaces the earlier one when the file is read.

    Resuming with proxies the file lacks adds their columns: the architectures already in the
    file are scored for the new proxies only. This gives the same numbers as scoring everything
    at once because each student is seeded right before it is built and the first probe batch
    does not depend on how many batches are drawn.

    Args:
        path: the CSV.
        settings: what determines the scores, apart from which proxies are computed.
        proxies: the proxies this run needs.
        resume: continue an existing file (its settings must match); without it an existing
            file is an error, so a finished run is never overwritten by accident.
        rescore: proxies whose existing scores are discarded and computed again.
    """

    def __init__(self, path: str | Path, settings: Mapping[str, Any], proxies: Sequence[str], resume: bool,
                 rescore: Sequence[str] = (), read_only: bool = False) -> None:
        self.path = Path(path)
        self.settings = json.loads(json.dumps(dict(settings)))  # as it will read back
        self.wanted = list(proxies)
        self.proxies = list(proxies)  # the file's columns: earlier proxies first, then new ones
        self.rows: dict[str, ScoredArch] = {}
        self._added: list[str] = list(proxies)  # columns this run adds (all of them for a new file)
        self.read_only = read_only
        self._handle = self._lock = None
        if read_only:
            if not self.path.is_file():
                raise DasError(f"no scores at {self.path} to report on; run without --report-only first (or give --scores)")
            self._load()
            unknown = [p for p in self.wanted if p not in self.file_proxies]
            if unknown:
                raise DasError(f"{self.path} has no scores for {unknown}; it has {self.file_proxies}")
            return
        self._acquire_lock()
        try:
            if self.path.exists():
                if not resume:
                    raise DasError(f"{self.path} already exists; pass --resume to continue it, or remove it or choose another --out")
                self._load()
            for row in self.rows.values():  # e.g. after a fix to those proxies: score them again
                for name in rescore:
                    row.values.pop(name, None)
                    row.errors.pop(name, None)
            self._rewrite()  # drops a half-written last line left by a kill; adds new proxy columns
        except BaseException:
            self.close()
            raise
        self._handle = self.path.open("a", newline="")
        self._writer = csv.writer(self._handle)

    def _acquire_lock(self) -> None:
        """One writer per scores file: a second run would rewrite the file under the first one."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        handle = lock_path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise DasError(f"{self.path} is being written by another run (it holds {lock_path}); wait for it to finish, or read it with --report-only") from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = (handle, lock_path)

    @property
    def file_proxies(self) -> list[str]:
        """The proxy columns the file had before this run added any."""
        return [p for p in self.proxies if p not in self._added]

    def complete_proxies(self, keys: Iterable[str]) -> list[str]:
        """The file's proxies scored for every one of ``keys`` that the file holds."""
        rows = [self.rows[k] for k in keys if k in self.rows]
        return [p for p in self.file_proxies if rows and all(p in r.values for r in rows)]

    @property
    def columns(self) -> list[str]:
        return ["key", "arch", "seconds", *self.proxies, "errors"]

    def _load(self) -> None:
        with self.path.open(newline="") as f:
            first = f.readline()
            if not first.startswith(_SETTINGS_PREFIX):
                raise DasError(f"{self.path} is not a das scores file (no '{_SETTINGS_PREFIX.strip()}' first line); remove it or choose another --out")
            try:
                theirs = json.loads(first[len(_SETTINGS_PREFIX):])
            except json.JSONDecodeError:
                raise DasError(f"{self.path} has an unreadable settings line; remove it or choose another --out") from None
            differ = sorted(k for k in set(theirs) | set(self.settings) if theirs.get(k) != self.settings.get(k))
            if differ:
                detail = "; ".join(f"{k}: file {theirs.get(k)!r}, now {self.settings.get(k)!r}" for k in differ)
                raise DasError(f"cannot resume {self.path}: it was scored with other settings ({detail}); rerun with those settings or choose another --out")
            reader = csv.reader(f)
            header = next(reader, None) or []
            if header[:3] != ["key", "arch", "seconds"] or header[-1:] != ["errors"]:
                raise DasError(f"cannot resume {self.path}: its columns {header} are not key, arch, seconds, <proxies>, errors; choose another --out")
            earlier = header[3:-1]
            self.proxies = earlier + [p for p in self.wanted if p not in earlier]
            self._added = [p for p in self.wanted if p not in earlier]
            for fields in reader:
                if len(fields) != len(header):
                    continue  # a row cut short by a kill: it is scored again
                try:
                    row = self._parse(fields, earlier)
                except ValueError:
                    continue
                self.rows[row.key] = row

    @staticmethod
    def _parse(fields: list[str], proxies: Sequence[str]) -> ScoredArch:
        key, arch, seconds, *vals, errors = fields
        values = {n: float(v) for n, v in zip(proxies, vals) if v != ""}
        return ScoredArch(key, arch, float(seconds), values, json.loads(errors) if errors else {})

    def _format(self, row: ScoredArch) -> list[str]:
        errors = json.dumps(row.errors, sort_keys=True) if row.errors else ""
        cells = [repr(float(row.values[n])) if n in row.values else "" for n in self.proxies]
        return [row.key, row.arch, f"{row.seconds:.4f}", *cells, errors]

    def _rewrite(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", newline="") as f:
            f.write(_SETTINGS_PREFIX + json.dumps(self.settings, sort_keys=True) + "\n")
            writer = csv.writer(f)
            writer.writerow(self.columns)
            for row in self.rows.values():
                writer.writerow(self._format(row))
        os.replace(tmp, self.path)

    def missing(self, key: str) -> list[str]:
        """The proxies this run wants that ``key`` has not been scored for (all of them if new)."""
        row = self.rows.get(key)
        return list(self.wanted) if row is None else [p for p in self.wanted if p not in row.values]

    def __contains__(self, key: str) -> bool:
        """``key`` is scored for every proxy this run wants."""
        return not self.missing(key)

    def add(self, row: ScoredArch) -> None:
        """Record (or complete) an architecture's row: values and errors merge into what exists."""
        if self._handle is None:
            raise DasError(f"{self.path} was opened read-only (--report-only); nothing can be added to it")
        old = self.rows.get(row.key)
        if old is not None:
            row = ScoredArch(row.key, row.arch, old.seconds + row.seconds, {**old.values, **row.values}, {**old.errors, **row.errors})
        self.rows[row.key] = row
        self._writer.writerow(self._format(row))
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._lock is not None:
            handle, lock_path = self._lock
            lock_path.unlink(missing_ok=True)  # no stray lock files next to the results
            handle.close()
            self._lock = None


def score_archs(
    archs: Sequence[tuple[str, str]],
    build: Callable[[str], nn.Module],
    batches: Sequence[Batch],
    scores: ScoresFile,
    seed: int,
    teacher: DisWOTReference | None = None,
    fused: bool = True,
    every: int = 50,
    on_progress: Callable[[], None] | None = None,
    desc: str = "scoring",
) -> int:
    """Score each ``(key, arch)`` for the proxies ``scores`` lacks for it; returns how many archs were scored.

    ``torch.manual_seed(seed)`` runs right before each build, so an architecture's initial
    weights (and any randomness in its proxies) are the same whatever was scored before it,
    which is what makes a resumed or extended run equal an uninterrupted one. The time recorded
    per architecture covers building the network and scoring it. ``on_progress`` is called every
    ``every`` architectures (e.g. to write partial results).
    """
    from tqdm import tqdm

    todo = [(k, a) for k, a in archs if k not in scores]
    done = 0
    for key, arch in tqdm(todo, desc=desc, unit="arch", initial=len(archs) - len(todo), total=len(archs), dynamic_ncols=True):
        proxies = scores.missing(key)
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        model = build(arch)
        values, errors = score_safely(model, batches, proxies, teacher=teacher, fused=fused, seed=seed)
        scores.add(ScoredArch(key, arch, time.perf_counter() - t0, values, errors))
        done += 1
        if on_progress is not None and done % every == 0:
            on_progress()
    return done


# --------------------------------------------------------------------------- results


def failure_summary(rows: Iterable[ScoredArch], name: str, examples: int = 3) -> dict[str, Any]:
    """How often proxy ``name`` failed over ``rows``: count, non-finite vs raised, a few messages."""
    failed = [(r.key, r.errors[name]) for r in rows if name in r.errors]
    raised = sum(not _NONFINITE.search(msg) for _, msg in failed)
    return {
        "count": len(failed),
        "nonfinite": len(failed) - raised,
        "raised": raised,
        "examples": [f"{key}: {msg}" for key, msg in failed[:examples]],
    }


def json_safe(obj: Any) -> Any:
    """Replace NaN/inf floats by None so the result is standard JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Write atomically (a reader never sees half a file, a kill never leaves one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(obj), indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], out=sys.stdout) -> None:
    """A plain aligned text table (first column left-aligned, the rest right-aligned)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(header), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in rows:
        print(line(r), file=out)


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
