"""Scoring architectures for a benchmark so that one proxy's failure is counted, never hidden.

A proxy that raises or returns a non-finite value on one architecture is *counted and reported*
as a failure of that proxy, never dropped silently and never allowed to take the other proxies
of the same architecture down with it. Each student is initialised from
``torch.manual_seed(seed)`` right before it is built, so its weights do not depend on what was
scored before it and a resumed run (:class:`~das.report.scores_file.ScoresFile`) gives the same
numbers as an uninterrupted one.
"""

from __future__ import annotations

import inspect
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from das.proxies import DisWOTReference, score
from das.proxies.context import Batch
from das.report.scores_file import ScoredArch, ScoresFile

# A non-finite score, whether the benchmark saw it returned or das's score() refused it.
_NONFINITE = re.compile(r"\b(returned|gave) [+-]?(nan|inf)\b")


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
