"""train.py's checks against the search that chose its student, before any epoch trains.

A student given as a search result (``best_arch.json``, ``leaderboard.csv#N``, ``pareto.json#N``)
comes with what the search saw: its images' shape, its teacher, its budget. Distilling at
another image size with the search's own teacher, or a leaderboard row the search never scored,
looks like it works and is silently wrong; these checks say so in one line.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from das.errors import DasError
from das.inputs import check_runs_on
from das.models import leaderboard_row, pareto_entry


def check_models_run(student: nn.Module, student_name: str, teacher: nn.Module | None, teacher_name: str | None,
                     input_shape: tuple[int, ...]) -> None:
    """Refuse images too small for the student or the teacher, in one line (as search.py does), before any data is read."""
    x = torch.zeros(2, *input_shape)
    check_runs_on(student, f"model.student={student_name!r}", x)
    if teacher is not None:
        check_runs_on(teacher, f"model.teacher={teacher_name!r}", x)


def search_context(student: str) -> tuple[Path, dict[str, Any]] | None:
    """The file that records what the search of ``student`` saw, and that record (``data``, ``teacher``); None when not a search result."""
    text = student.strip()
    entry = pareto_entry(text)
    row = leaderboard_row(text)
    if entry is not None:
        path, key = entry[0], None  # pareto.json carries the context at its top level
    elif row is not None:
        path, key = row[0].parent / "best_arch.json", "search"
    elif text.endswith(".json"):
        path, key = Path(text), "search"
    else:
        return None
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    context = body.get(key) if key and isinstance(body, dict) else body
    return (path, context) if isinstance(context, dict) else None


def check_search_shape(student: str, teacher_checkpoint: str | None, input_shape: tuple[int, ...], image_size: int | None) -> None:
    """Refuse another image shape than the search's when the teacher is the search's own checkpoint.

    That teacher was trained (or measured) on the search's images; at another size it is another
    network (the quickstart's digits teacher: 99.16% at 16×16, 32.59% at 32×32), and its
    students were ranked at the search's size. Another teacher is the user's choice, not checked.
    """
    found = search_context(student)
    if found is None or teacher_checkpoint is None:
        return
    path, context = found
    searched = (context.get("data") or {}).get("input_shape")
    search_teacher = (context.get("teacher") or {}).get("checkpoint")
    if not searched or tuple(searched) == tuple(input_shape) or not search_teacher:
        return
    if Path(search_teacher).resolve() != Path(teacher_checkpoint).resolve():
        return
    shape, was = "×".join(map(str, input_shape)), "×".join(map(str, searched))
    raise DasError(
        f"data.image_size={image_size} gives {shape} images, but {path} was searched on {was} images with this teacher "
        f"({teacher_checkpoint}), which has not been tested at another size: use --data.image_size {searched[-1]} "
        f"--model.input_size '[{', '.join(map(str, searched))}]'"
    )


def warn_unscored_row(student: str) -> None:
    """Warn when ``student`` is a leaderboard row over the search's budget: the search never scored it."""
    row = leaderboard_row(student)
    if row is None or not row[0].is_file():
        return
    path, rank = row
    with path.open(newline="") as f:
        found = next((r for r in csv.DictReader(f) if (r.get("rank") or "").strip() == (rank or "").strip()), None)
    if found is None or (found.get("feasible") or "").strip() != "False":
        return
    budget = _search_budget(path.parent / "search_config.yaml")
    size = f"{int(found['params']):,} params" if (found.get("params") or "").isdigit() else "its size"
    print(f"warning: model.student={student} is over the search's budget ({size}; {budget}) and was never scored by it; "
          "distilling it anyway (the rows within the budget come first in the leaderboard)", file=sys.stderr)


def _search_budget(config: Path) -> str:
    import yaml

    try:
        budget = (yaml.safe_load(config.read_text()) or {}).get("budget") or {}
    except (OSError, yaml.YAMLError):
        budget = {}
    limits = [f"budget.{k}={v}" for k, v in budget.items() if v is not None]
    return ", ".join(limits) or "the budget in its search_config.yaml"
