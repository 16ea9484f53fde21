"""The proxy registry.

A proxy is a function ``(ctx: ScoringContext) -> float`` registered under a name with the
passes it needs. Higher is better for every registered proxy (distances are negated), so a
search can always maximise. The passes a proxy reads (e.g. the student's final feature map on
the probe batch) are computed once per model by the context and shared by every proxy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from das.registry import Registry

if TYPE_CHECKING:
    from das.proxies.context import ScoringContext

ProxyFn = Callable[["ScoringContext"], float]


@dataclass(frozen=True)
class Proxy:
    """A registered proxy.

    Attributes:
        name: the registry name.
        fn: computes the score from a scoring context.
        needs_teacher: the proxy compares the student with a teacher (DisWOT).
        min_batches: how many probe batches it needs (ZiCo needs two).
    """

    name: str
    fn: ProxyFn
    needs_teacher: bool = False
    min_batches: int = 1


PROXIES: Registry[Proxy] = Registry("proxy")


def register_proxy(name: str, *, needs_teacher: bool = False, min_batches: int = 1) -> Callable[[ProxyFn], ProxyFn]:
    """Decorator: register ``fn`` as proxy ``name``."""

    def decorator(fn: ProxyFn) -> ProxyFn:
        PROXIES.add(name, Proxy(name, fn, needs_teacher, min_batches))
        return fn

    return decorator
