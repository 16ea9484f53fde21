"""A benchmark's per-architecture scores as a CSV that is appended row by row and resumable.

The benchmarks score hundreds to thousands of untrained networks, an hour or more on a laptop
CPU, so every architecture's scores are appended and flushed as soon as they exist and an
interrupted run resumes where it stopped (``--resume``). The settings that change a score
(seed, probe data, widths, teacher, proxies) are written at the top of the file and a resume
with different settings is refused, so a resumed file never mixes two experiments.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from das.errors import DasError

_SETTINGS_PREFIX = "# settings: "


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
