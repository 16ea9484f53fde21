"""Build any network das knows from one string: a searched student or a teacher spec.

A string names either an architecture of a search space (an :class:`ArchSpec`) or a network
that is not one (a teacher spec, :func:`teachers.create_teacher`):

- ``runs/x/best_arch.json``: the best architecture of a search, or any ArchSpec JSON file;
- ``runs/x/pareto.json#N``: entry N (from 1) of a multi-objective search's Pareto front;
- ``runs/x/leaderboard.csv#N``: the architecture ranked N in a search's leaderboard (1 is the
  best, as the ``rank`` column prints it). The CSV shows each architecture's choices but not the
  space's arguments, so the spec is read from the search's Optuna study, the trial the row
  names: ``study.journal`` beside the CSV, or the storage that ``search_config.yaml`` beside it
  records;
- an inline ArchSpec JSON (``{"space": "nb201", "choices": {...}, "space_args": {...}}``);
- ``runs/x/pruned.pt``: a network file with its spec and weights (:mod:`das.nets.pruned`, as
  prune.py's slimming writes them), e.g. a student to fine-tune or distil;
- a registered teacher name (``resnet20``), ``timm:NAME``, ``torchvision:NAME`` or
  ``package.module:function``.

The kinds of strings are model sources in a registry (:data:`MODEL_SOURCES`): each source says
which strings it reads and builds their network. A string no source claims is an architecture
of a search space or a teacher spec. This module sits above the spaces and the teachers and
below every workflow; it reads a search's outputs (leaderboard, Pareto front, study) but
imports nothing of the search, the distillation or the pruning.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from das.errors import DasError
from das.nets.checkpoint import load_checkpoint
from das.registry import Registry
from das.spec import ArchSpec
from das.storage import hide_password, make_storage
from teachers import create_teacher

#: ``PATH.csv#N``; the part after ``#`` is checked separately so a bad rank gets its own message.
_LEADERBOARD_ROW = re.compile(r"(?P<path>.+\.csv)(?:#(?P<rank>.*))?", re.IGNORECASE)
#: ``PATH.json#N``: an entry of a pareto.json (likewise).
_PARETO_ENTRY = re.compile(r"(?P<path>.+\.json)#(?P<index>.*)", re.IGNORECASE)
#: Files that :func:`build_model` reads as networks with their own spec (:func:`das.nets.pruned.save_pruned`).
NETWORK_FILE_SUFFIXES = (".pt", ".pth")


@dataclass(frozen=True)
class ModelSource:
    """A kind of string that names a network, and how to build it.

    Attributes:
        name: the registry name.
        claims: whether a string is of this kind (checked before anything else).
        build: ``build(spec, num_classes)``, the network the string names (weights included, if it carries any).
    """

    name: str
    claims: Callable[[str], bool]
    build: Callable[[str, int], nn.Module]


MODEL_SOURCES: Registry[ModelSource] = Registry("model source")


def register_model_source(name: str, claims: Callable[[str], bool]) -> Callable[[Callable[[str, int], nn.Module]], Callable[[str, int], nn.Module]]:
    """Decorator: register ``build(spec, num_classes)`` for the strings ``claims`` accepts."""

    def decorator(build: Callable[[str, int], nn.Module]) -> Callable[[str, int], nn.Module]:
        MODEL_SOURCES.add(name, ModelSource(name, claims, build))
        return build

    return decorator


def model_source(spec: str | ArchSpec) -> ModelSource | None:
    """The registered source that claims ``spec``, or None for an architecture or a teacher spec."""
    if not isinstance(spec, str):
        return None
    sources = (MODEL_SOURCES.get(name) for name in MODEL_SOURCES)
    return next((source for source in sources if source.claims(spec)), None)


def build_model(spec: str | ArchSpec, num_classes: int, checkpoint: str | None = None, what: str = "teacher") -> nn.Module:
    """Build a network.

    Args:
        spec: an :class:`ArchSpec`, a path to an architecture JSON (``best_arch.json``), a
            Pareto entry (``pareto.json#N``), a leaderboard row (``leaderboard.csv#N``), an inline ArchSpec JSON, a
            string a registered source claims (``pruned.pt``, built with its saved weights), or a teacher spec
            (``resnet20``, ``timm:NAME``, ``torchvision:NAME``, ``package.module:function``).
        num_classes: classifier outputs.
        checkpoint: optional local weights, loaded strictly.
        what: what the network is to the caller, for the messages of a teacher spec that fails
            to build ("unknown student 'x'" rather than "unknown teacher 'x'").
    """
    source = model_source(spec)
    if source is not None:
        model = source.build(spec, num_classes)
    else:
        arch = arch_spec(spec)
        if arch is None:
            return create_teacher(str(spec), checkpoint=checkpoint, num_classes=num_classes, what=what)
        model = arch.build(num_classes)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return model


def network_file(spec: str | ArchSpec) -> bool:
    """Whether ``spec`` names a network file (``.pt``/``.pth``; what is in it is checked on loading)."""
    return isinstance(spec, str) and spec.strip().lower().endswith(NETWORK_FILE_SUFFIXES)


@register_model_source("network file", claims=network_file)
def _network_file(spec: str, num_classes: int) -> nn.Module:
    from das.nets.pruned import load_pruned  # imports Torch-Pruning, so only when a file is read

    return load_pruned(spec, build_model, num_classes)


def arch_spec(spec: str | ArchSpec) -> ArchSpec | None:
    """The :class:`ArchSpec` that ``spec`` names, or None when it names a network of no search space.

    An architecture file, a leaderboard row and inline JSON give their ArchSpec (so a student's
    checkpoint can carry it); a teacher spec such as ``resnet20`` or ``timm:resnet18`` gives None.
    """
    if isinstance(spec, ArchSpec):
        return spec
    text = spec.strip()
    if text.startswith("{"):
        return ArchSpec.from_json(text)
    if text.endswith(".json"):
        return ArchSpec.load(Path(text))
    entry = pareto_entry(text)
    if entry:
        return pareto_spec(*entry)
    row = leaderboard_row(text)
    if row:
        return leaderboard_spec(*row)
    return None


def leaderboard_row(spec: str) -> tuple[Path, str | None] | None:
    """``(csv path, rank text)`` when ``spec`` names a leaderboard row (``PATH.csv#N``), else None; the rank is checked later."""
    row = _LEADERBOARD_ROW.fullmatch(spec.strip())
    return (Path(row["path"]), row["rank"]) if row else None


def pareto_entry(spec: str) -> tuple[Path, str] | None:
    """``(json path, index text)`` when ``spec`` names a Pareto entry (``PATH.json#N``), else None; the index is checked later."""
    match = _PARETO_ENTRY.fullmatch(spec.strip())
    return (Path(match["path"]), match["index"]) if match else None


def pareto_spec(path: str | Path, index: str | int) -> ArchSpec:
    """The architecture of entry ``index`` (from 1) of the pareto.json at ``path`` (written by search.py).

    Raises:
        DasError: an index that is not a positive integer, a missing file, a file that is not a
            pareto.json, or an index past its last entry.
    """
    import json

    path = Path(path)
    shown = f"{path}#{index}"
    if not re.fullmatch(r"[1-9][0-9]*", str(index).strip()):
        raise DasError(f"pareto entry {shown!r} must be PATH/pareto.json#N with N an entry's index (from 1), e.g. runs/x/pareto.json#1")
    if not path.is_file():
        raise DasError(f"pareto file {str(path)!r} does not exist; run search.py with study.objectives first or give an existing pareto.json")
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DasError(f"pareto file {str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(body, dict) or not isinstance(body.get("front"), list):
        raise DasError(f"{str(path)!r} is not a pareto.json (it has no 'front' list); #N picks an entry of a search's pareto.json")
    number = int(str(index).strip())
    entry = next((e for e in body["front"] if isinstance(e, dict) and e.get("index") == number), None)
    if entry is None:
        count = len(body["front"])
        span = f"{count} entries (#1–#{count})" if count else "no entries"
        raise DasError(f"pareto file {str(path)!r} has {span}; #{number} is out of range")
    return ArchSpec.from_dict(entry["spec"])


def leaderboard_spec(path: str | Path, rank: str | int | None) -> ArchSpec:
    """The architecture ranked ``rank`` in the leaderboard CSV at ``path`` (written by search.py).

    Raises:
        DasError: a rank that is not a positive integer, a missing or foreign CSV, a rank past
            the last row, or a row whose spec cannot be found (no study beside the CSV).
    """
    path = Path(path)
    shown = str(path) if rank is None else f"{path}#{rank}"
    if rank is None or not re.fullmatch(r"[1-9][0-9]*", str(rank).strip()):
        raise DasError(
            f"leaderboard row {shown!r} must be PATH.csv#N with N a rank from its rank column "
            "(1 is the best), e.g. runs/quickstart/leaderboard.csv#1"
        )
    rank = int(str(rank).strip())
    if not path.is_file():
        raise DasError(f"leaderboard {str(path)!r} does not exist; run search.py first or give an existing leaderboard.csv")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = reader.fieldnames or []
    if "rank" not in columns:
        raise DasError(f"{str(path)!r} is not a search leaderboard (it has no rank column; its columns: {', '.join(columns) or 'none'})")
    found = [r for r in rows if (r.get("rank") or "").strip() == str(rank)]
    if not found:
        span = f"{len(rows)} rows (ranks 1–{len(rows)})" if rows else "no rows"
        raise DasError(f"leaderboard {str(path)!r} has {span}; #{rank} is out of range")
    row = found[0]
    if (row.get("spec") or "").strip():  # a leaderboard that carries each row's spec JSON
        return ArchSpec.from_json(row["spec"])
    return _spec_from_study(path, rank, row)


def _spec_from_study(path: Path, rank: int, row: dict[str, Any]) -> ArchSpec:
    """The spec of the trial a leaderboard row names, read from the search's study."""
    arch = (row.get("arch") or "").strip()
    trial = (row.get("trial") or "").strip()
    what = f"row #{rank} of {str(path)!r}" + (f" ({arch})" if arch else "")
    if not trial.isdigit():
        raise DasError(f"{what} has no architecture spec: it names no trial; pass the architecture as a best_arch.json or inline ArchSpec JSON")
    study = _open_study(path, what)
    attrs = next((t.user_attrs for t in study.get_trials(deepcopy=False) if t.number == int(trial)), None)
    if attrs is None or "arch" not in attrs:
        raise DasError(
            f"{what} has no architecture spec: trial {trial} of study {study.study_name!r} records none; "
            "was the leaderboard written by another study? rerun search.py in its run directory to rewrite it"
        )
    spec = ArchSpec.from_json(attrs["arch"])
    if arch and str(spec) != arch:
        raise DasError(
            f"{what} names trial {trial}, but that trial of study {study.study_name!r} is {spec}; the leaderboard "
            "and the study beside it are from different searches: rerun search.py in the run directory to rewrite it"
        )
    return spec


def _open_study(path: Path, what: str):
    """The Optuna study of the search that wrote the leaderboard at ``path``, as search_config.yaml records it."""
    import optuna
    import yaml

    run_dir = path.parent
    config = run_dir / "search_config.yaml"
    settings = (yaml.safe_load(config.read_text()) or {}) if config.is_file() else {}
    study_cfg = settings.get("study") or {}
    storage, name = study_cfg.get("storage"), study_cfg.get("study_name") or "das"
    if storage is None or "://" not in storage:  # a journal file: the run directory's, unless configured
        storage = str(run_dir / "study.journal") if storage is None else storage
        if not Path(storage).is_file():
            raise DasError(
                f"{what} has no architecture spec: the leaderboard names trials of a study, and its journal "
                f"{storage!r} does not exist; keep leaderboard.csv in its search's run directory"
            )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=make_storage(storage, run_dir))
    except KeyError:
        raise DasError(f"{what} has no architecture spec: study {name!r} is not in {hide_password(storage)!r}") from None
