"""The proxy registry.

A proxy is a function ``(ctx: ScoringContext) -> float`` registered under a name with what it
reads (its ``needs``). Higher is better for every registered proxy (distances are negated), so a
search can always maximise. ``score()`` gives every proxy requested together one context whose
labelled pass carries the hooks of all their needs, so shared passes run once per model.

Needs are the built-in products of the context (``weight_grads``, ``batch_grads``,
``data_free``; see :data:`das.proxies.needs.BUILTIN_NEEDS`) and the registered taps
(``relu_kernel``, ``fisher``, ``input_jacobian``, ...; see :func:`das.proxies.needs.register_tap`).
A proxy with no needs (``params``, ``flops``) reads only the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from das.proxies.needs import known_needs
from das.registry import Registry


#: A proxy: a das.proxies.context.ScoringContext in, a score out (typed loosely so base stays below context).
ProxyFn = Callable[[Any], float]


@dataclass(frozen=True)
class Proxy:
    """A registered proxy.

    Attributes:
        name: the registry name.
        fn: computes the score from a scoring context.
        needs_teacher: the proxy compares the student with a teacher (DisWOT).
        min_batches: how many probe batches it needs (ZiCo needs two).
        needs: what it reads from the context (built-in products and tap names).
        needs_reference: the proxy ranks against a reference population (``ensemble``).
    """

    name: str
    fn: ProxyFn
    needs_teacher: bool = False
    min_batches: int = 1
    needs: frozenset[str] = field(default_factory=frozenset)
    needs_reference: bool = False


PROXIES: Registry[Proxy] = Registry("proxy")


def register_proxy(
    name: str,
    *,
    needs: Iterable[str] = (),
    needs_teacher: bool = False,
    min_batches: int = 1,
    needs_reference: bool = False,
) -> Callable[[ProxyFn], ProxyFn]:
    """Decorator: register ``fn`` as proxy ``name``.

    Args:
        name: the registry name.
        needs: what the proxy reads; each a built-in need or a tap registered before the proxy.
        needs_teacher: the proxy compares the student with a teacher.
        min_batches: fewest probe batches it works with.
        needs_reference: the proxy ranks against a reference population.
    """
    wanted = frozenset(needs)
    unknown = wanted - known_needs()
    if unknown:
        raise ValueError(f"proxy {name!r} needs {sorted(unknown)}, which are neither built-in needs nor registered taps")

    def decorator(fn: ProxyFn) -> ProxyFn:
        PROXIES.add(name, Proxy(name, fn, needs_teacher, min_batches, wanted, needs_reference))
        return fn

    return decorator
