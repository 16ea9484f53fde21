"""Zero-cost proxies: score a network from one or two minibatches, without training it.

``score(model, batches, proxies=[...], teacher=None)`` returns ``{name: float}``; higher is
better for every proxy. Each proxy is registered by name (``PROXIES``) with what it reads
(``needs``); by default the proxies of one call share passes — one labelled forward with the
hooks they need, one cross-entropy backward, and only the extra passes that cannot be shared —
and the model is left exactly as it was.

Registered: params, flops, grad_norm, snip, grasp, fisher, synflow, jacov, nwot, zico, swap,
meco, az_expressivity, az_progressivity, az_trainability, az_complexity, diswot,
diswot_relation, diswot_semantic (one module each; AZ-NAS and DisWOT group their terms), and
``ensemble``, the log-rank aggregation of :data:`ENSEMBLE_MEMBERS` against a reference
population (:class:`EnsembleReference`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from das.errors import DasError
from das.proxies import az as _az  # noqa: F401  (each import registers its proxies)
from das.proxies import diswot as _diswot  # noqa: F401
from das.proxies import fisher as _fisher  # noqa: F401
from das.proxies import flops as _flops  # noqa: F401
from das.proxies import grad_norm as _grad_norm  # noqa: F401
from das.proxies import grasp as _grasp  # noqa: F401
from das.proxies import jacov as _jacov  # noqa: F401
from das.proxies import meco as _meco  # noqa: F401
from das.proxies import nwot as _nwot  # noqa: F401
from das.proxies import params as _params  # noqa: F401
from das.proxies import size_first as _size_first  # noqa: F401  (after meco, whose tap it reads)
from das.proxies import snip as _snip  # noqa: F401
from das.proxies import swap as _swap  # noqa: F401
from das.proxies import synflow as _synflow  # noqa: F401
from das.proxies import zico as _zico  # noqa: F401
from das.proxies import ensemble as _ensemble  # noqa: E402  (after its members)
from das.proxies.base import PROXIES, Proxy, register_proxy
from das.proxies.context import BUILTIN_NEEDS, TAPS, Batch, ScoringContext, Tap, register_tap
from das.proxies.diswot import DEFAULT_TEACHER_INIT, TEACHER_INITS, DisWOTReference
from das.proxies.ensemble import ENSEMBLE_MEMBERS, EnsembleReference
from das.proxies.state import preserved


def score(
    model: nn.Module,
    batches: Sequence[Batch],
    proxies: Sequence[str],
    teacher: nn.Module | DisWOTReference | None = None,
    *,
    reference: EnsembleReference | None = None,
    teacher_init: str = DEFAULT_TEACHER_INIT,
    fused: bool = True,
    seed: int = 0,
    flops: int | None = None,
) -> dict[str, float]:
    """Score ``model`` with each named proxy.

    Args:
        model: the candidate network (at initialisation); scored in train mode, left unchanged.
        batches: labelled probe batches ``(x, y)`` on the model's device; most proxies read the
            first, zico reads all (≥ 2).
        proxies: registered proxy names.
        teacher: for teacher-aware proxies, the trained teacher or a precomputed reference
            (pass the reference in a search so the teacher runs once, not per candidate).
        reference: for ``ensemble``, the reference population its ranks are relative to.
        teacher_init: when ``teacher`` is a model, which of its weights DisWOT compares with:
            ``random`` (a seeded N(0, 1) re-initialisation, the DisWOT authors' protocol) or
            ``trained`` (its own weights, eval mode).
        fused: share passes between the proxies (one labelled forward+backward for all). With
            ``False`` every proxy runs in a fresh context of its own — the same numbers, slower;
            for tests and for timing the fusion.
        seed: seeds every forward pass and random probe signal, so scores are reproducible.
        flops: the model's FLOPs on one probe input when the caller has counted them already
            (a search counts them for the budget), so ``flops`` and ``az_complexity`` do not
            count them again.

    Raises:
        DasError: for an unknown proxy, a missing teacher, too few batches, or a proxy that
            produced a non-finite value on this model (named in the message).
    """
    chosen: list[Proxy] = [PROXIES.get(name) for name in proxies]
    needs_teacher = [p.name for p in chosen if p.needs_teacher]
    if needs_teacher and teacher is None:
        raise DasError(f"proxies {needs_teacher} compare the student with a teacher; pass teacher=")
    for p in chosen:
        if len(batches) < p.min_batches:
            raise DasError(
                f"proxy {p.name!r} needs at least {p.min_batches} probe batches, got {len(batches)}; "
                f"pass {p.min_batches} or more batches"
            )
    needs_reference = [p.name for p in chosen if p.needs_reference]
    if needs_reference and reference is None:
        raise DasError(f"proxies {needs_reference} rank against a reference population; pass reference=EnsembleReference(...)")
    if needs_teacher and isinstance(teacher, nn.Module):  # read the teacher only when a proxy compares with it
        teacher = DisWOTReference.from_teacher(teacher, batches[0], init=teacher_init, seed=seed)
    groups = [chosen] if fused else [[p] for p in chosen]
    values: dict[str, float] = {}
    for group in groups:
        needs = frozenset().union(*(p.needs for p in group))
        with preserved(model):
            ctx = ScoringContext(model, list(batches), teacher, needs=needs, seed=seed, reference=reference, flops=flops)
            for p in group:
                values[p.name] = _finite(p.name, ctx.value(p.name))
    return {name: values[name] for name in proxies}


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise DasError(f"proxy {name!r} gave {value} on this model; das treats a non-finite score as a bug, please report it")
    return value + 0.0  # −0.0 (e.g. a negated zero sum) prints as 0.0


__all__ = [
    "BUILTIN_NEEDS",
    "PROXIES",
    "TAPS",
    "DEFAULT_TEACHER_INIT",
    "DisWOTReference",
    "ENSEMBLE_MEMBERS",
    "EnsembleReference",
    "Proxy",
    "ScoringContext",
    "TEACHER_INITS",
    "Tap",
    "preserved",
    "register_proxy",
    "register_tap",
    "score",
]
