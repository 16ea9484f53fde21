"""What a proxy may declare it reads: the context's built-in products and the registered taps.

This sits below both the proxy registry (:mod:`das.proxies.base`, which checks a proxy's needs
when it is registered) and the scoring context (:mod:`das.proxies.context`, which runs the passes
those needs ask for), so neither imports the other to learn the names.
"""

from __future__ import annotations

from collections.abc import Callable

from das.registry import Registry


#: Products the context computes itself (the other needs are registered taps).
BUILTIN_NEEDS: dict[str, str] = {
    "weight_grads": "∂CE/∂W of every conv/linear weight on the first probe batch (the shared backward)",
    "batch_grads": "the same gradients on every probe batch (one forward+backward per further batch)",
    "data_free": "no probe data: the proxy runs its own pass on a synthetic input",
}

#: Tap classes (das.proxies.context.Tap subclasses) by need name; typed loosely so this module stays below context.
TAPS: Registry[type] = Registry("tap")


def register_tap(name: str) -> Callable[[type], type]:
    """Class decorator: make a :class:`~das.proxies.context.Tap` available as the need ``name``."""

    def decorator(cls: type) -> type:
        TAPS.add(name, cls)
        return cls

    return decorator


def known_needs() -> set[str]:
    return set(BUILTIN_NEEDS) | set(TAPS.names())
