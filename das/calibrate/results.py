"""A resumable results file: a settings line, then one JSON line per finished item, flushed at once.

A population run takes hours, so each student's record is appended and flushed as soon as it
exists, and a rerun of the same command skips the students already in the file. The settings
are what make two records comparable (data, teacher, recipe, seed); a file written with other
settings is refused, naming the keys that differ, rather than mixed. A last line cut short by a
kill is dropped when the file is opened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from das.errors import DasError


def flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (``recipe.optim.lr``), so a difference names its key."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class ResultsFile:
    """JSON lines: ``{"settings": {...}}`` first, then one record per line.

    Args:
        path: the file; created with its settings line when missing.
        settings: JSON-able settings; an existing file must have been written with equal ones.
    """

    def __init__(self, path: str | Path, settings: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings))  # as it reads back
        self.records: list[dict[str, Any]] = []
        if self.path.exists() and self.path.stat().st_size:
            self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rewrite()

    def _read(self) -> None:
        text = self.path.read_text()
        lines = text.splitlines()
        try:
            theirs = json.loads(lines[0])["settings"]
        except (json.JSONDecodeError, KeyError, TypeError, IndexError):
            raise DasError(f"{self.path} is not a results file (its first line holds no settings); remove it or choose another path") from None
        mine, flat = flatten(self.settings), flatten(theirs)
        if changed := sorted(k for k in set(mine) | set(flat) if mine.get(k, "<absent>") != flat.get(k, "<absent>")):
            diff = "; ".join(f"{k}: file {flat.get(k, '<absent>')!r}, now {mine.get(k, '<absent>')!r}" for k in changed)
            raise DasError(f"{self.path} was written with other settings ({diff}); rerun with the file's settings or choose another results path")
        cut = not text.endswith("\n")
        for line in lines[1:]:
            try:
                self.records.append(json.loads(line))
            except json.JSONDecodeError:
                cut = True  # the half-written last line of a killed run
        if cut:
            self._rewrite()

    def _rewrite(self) -> None:
        """Write the settings and the records whole, atomically (a kill leaves the old file or the new one)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as f:
            for obj in [{"settings": self.settings}, *self.records]:
                f.write(json.dumps(obj) + "\n")
        os.replace(tmp, self.path)

    def find(self, **key: Any) -> dict[str, Any] | None:
        """The last record whose fields equal ``key``, or None."""
        return next((r for r in reversed(self.records) if all(r.get(k) == v for k, v in key.items())), None)

    def add(self, record: Mapping[str, Any]) -> None:
        """Append one record and flush it to disk at once."""
        record = json.loads(json.dumps(record))
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)
