"""What prune.py writes in its run directory, and what a resumed run reads back.

A run goes through stages, each of which leaves a file before the next begins, so Ctrl-C at any
point keeps what is done and ``--ckpt_path last`` carries on from there:

- at-init: ``masks.pt`` and a first ``prune_results.json`` (what was pruned, sizes, accuracy
  before training) once the masks are chosen; then Lightning's ``checkpoints/`` every epoch;
  then ``student.pt``/``.json``/``.onnx`` and the final ``prune_results.json``.
- slim: ``sparse/`` (the sparse training's checkpoints, then ``sparse/student.pt``, the unpruned
  network); ``pruned.pt`` (the slimmed network, before fine-tuning) and a first
  ``prune_results.json``; then the fine-tune's ``checkpoints/`` and the final files as above.

``prune_results.json`` records the settings it was written under; resuming under other
settings is refused, as is a rerun that would mix two runs' stages.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from das.distill.fit import CHECKPOINT_DIR
from das.errors import DasError
from das.report.output import write_json

RESULTS = "prune_results.json"
MASKS = "masks.pt"
PRUNED = "pruned.pt"
SPARSE_DIR = "sparse"
STUDENT = "student.pt"


@dataclass(frozen=True)
class RunFiles:
    """The paths of one prune.py run under ``root``."""

    root: Path

    @property
    def results(self) -> Path:
        return self.root / RESULTS

    @property
    def masks(self) -> Path:
        return self.root / MASKS

    @property
    def pruned(self) -> Path:
        return self.root / PRUNED

    @property
    def student(self) -> Path:
        return self.root / STUDENT

    @property
    def sparse_root(self) -> Path:
        return self.root / SPARSE_DIR

    @property
    def sparse_student(self) -> Path:
        return self.sparse_root / STUDENT

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINT_DIR

    def last(self, root: Path | None = None) -> str | None:
        """``last.ckpt`` of the training under ``root`` (default: the run's final training), if any."""
        path = (root or self.root) / CHECKPOINT_DIR / "last.ckpt"
        return str(path) if path.is_file() else None

    def has_stages(self) -> bool:
        """Whether anything a resume could carry on from is here."""
        return any(p.exists() for p in (self.results, self.masks, self.pruned, self.sparse_root, self.checkpoints))

    def clear(self) -> bool:
        """Remove an earlier run's stages (not its logs), so a fresh run never resumes from them; whether any were here."""
        found = self.has_stages()
        for path in (self.results, self.masks, self.pruned, self.student, self.student.with_suffix(".json"), self.student.with_suffix(".onnx")):
            path.unlink(missing_ok=True)
        for folder in (self.checkpoints, self.sparse_root):
            shutil.rmtree(folder, ignore_errors=True)
        return found

    def write(self, results: dict[str, Any]) -> None:
        """``prune_results.json``, replaced atomically (a kill never leaves half of it)."""
        write_json(self.results, results)

    def read(self, settings: dict[str, Any]) -> dict[str, Any] | None:
        """The results of the stages done so far, or None; a DasError if they were written under other ``settings``."""
        if not self.results.is_file():
            return None
        try:
            results = json.loads(self.results.read_text())
        except json.JSONDecodeError:
            raise DasError(f"{self.results} is not valid JSON; run without --ckpt_path to start afresh") from None
        theirs = results.get("settings")
        mine = json.loads(json.dumps(settings))  # as it reads back (tuples become lists)
        if theirs != mine:
            changed = sorted(k for k in set(theirs or {}) | set(mine) if (theirs or {}).get(k) != mine.get(k))
            raise DasError(
                f"--ckpt_path last: {self.results} was written with other settings ({', '.join(changed)} differ); "
                "rerun with that run's settings, or without --ckpt_path to start afresh"
            )
        return results
