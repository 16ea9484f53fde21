"""Zero-cost proxies: score a network from one or two minibatches, without training it.

``score(model, batches, proxies=[...], teacher=None)`` returns ``{name: float}``; higher is
better for every proxy. Each proxy is registered by name (``PROXIES``); passes shared by several
proxies run once per model, and the model is left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from das.errors import DasError
from das.proxies import diswot as _diswot  # noqa: F401  (registers the DisWOT proxies)
from das.proxies.base import PROXIES, Proxy, register_proxy
from das.proxies.context import Batch, ScoringContext
from das.proxies.diswot import DisWOTReference
from das.proxies.state import preserved


def score(
    model: nn.Module,
    batches: Sequence[Batch],
    proxies: Sequence[str],
    teacher: nn.Module | DisWOTReference | None = None,
) -> dict[str, float]:
    """Score ``model`` with each named proxy.

    Args:
        model: the candidate network (at initialisation).
        batches: labelled probe batches ``(x, y)`` on the model's device.
        proxies: registered proxy names.
        teacher: for teacher-aware proxies, the trained teacher or a precomputed reference
            (pass the reference in a search so the teacher runs once, not per candidate).
    """
    chosen: list[Proxy] = [PROXIES.get(name) for name in proxies]
    needs_teacher = [p.name for p in chosen if p.needs_teacher]
    if needs_teacher and teacher is None:
        raise DasError(f"proxies {needs_teacher} compare the student with a teacher; pass teacher=")
    for p in chosen:
        if len(batches) < p.min_batches:
            raise DasError(f"proxy {p.name!r} needs at least {p.min_batches} probe batches, got {len(batches)}")
    if isinstance(teacher, nn.Module):
        teacher = DisWOTReference.from_teacher(teacher, batches[0])
    with preserved(model):
        ctx = ScoringContext(model, list(batches), teacher)
        return {p.name: float(p.fn(ctx)) for p in chosen}


__all__ = ["PROXIES", "DisWOTReference", "Proxy", "ScoringContext", "register_proxy", "score"]
