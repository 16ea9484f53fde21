"""Activation patterns wherever a network applies its activations: modules, functions, methods.

NASWOT (``nwot``) and SWAP (``swap``) read which units are "on" for each probe image. Hooking
``nn.ReLU`` modules, as the authors' code does, sees nothing in a network that calls
``F.relu`` (das's CIFAR ResNet teachers) or uses another activation (timm's SiLU, Hardswish,
GELU), and such a network used to score a silent constant. So das watches the torch functions
themselves with a :class:`~torch.overrides.TorchFunctionMode` around the shared labelled
forward: an ``nn.ReLU`` module, ``F.relu``, ``torch.relu``, ``x.relu()`` and their in-place
forms all reach it as one call, and a module is counted once because its inner call to the
functional form runs while the mode is suspended.

The pattern of a unit is the sign of its pre-activation, ``1[z > 0]``, read before the call, so
an in-place activation (``nn.ReLU(inplace=True)``, ``F.silu(x, inplace=True)``) is read from its
input, not from what it wrote. For ReLU this is the papers' definition (ReLU(z) > 0 ⇔ z > 0);
for the other rectifiers it is the side of their kink (leaky_relu, prelu, elu, ...) or smooth
knee (gelu, silu, mish, softplus) at 0 that the unit is on, whatever they output below it.

Counted (:data:`ACTIVATIONS`), as module, function, ``torch.*`` or Tensor method, in place or not:
relu, relu6, leaky_relu, prelu, rrelu, elu, selu, celu, gelu, silu, mish, hardswish, softplus,
and hardtanh with ``min_val=0`` (what ``nn.ReLU6`` calls). Not counted: sigmoid, tanh,
hardsigmoid, softsign, other hardtanh ranges, softmax, glu, threshold and clamp. Those squash
or select rather than rectify, and in modern networks they mostly gate (squeeze-excitation,
attention, LSTM gates) or bound an output, so their signs would mix gate states into the unit
codes. A swish written out as ``x * torch.sigmoid(x)`` is therefore not seen; a network whose
forward applies no counted activation at all is refused (:func:`no_activation_error`) instead
of scoring a constant.

The mode sees eager calls only (not TorchScript). Any counted call made while the labelled
forward runs is read, including one inside another tap's forward hook, so taps must not apply
activations. Every torch call of the forward passes through the mode: about 1.4 µs each on CPU,
0.8 ms for the 578 calls of an NB201 network (C=16, N=5), under 0.2% of its CPU forward.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from das.errors import DasError

#: Activations whose pre-activation sign is a unit's pattern (hardtanh only with ``min_val=0``).
ACTIVATIONS: tuple[str, ...] = (
    "relu", "relu6", "leaky_relu", "prelu", "rrelu", "elu", "selu", "celu",
    "gelu", "silu", "mish", "hardswish", "softplus", "hardtanh",
)  # fmt: skip

Listener = Callable[[torch.Tensor], None]


def _activation_functions() -> dict[Any, str]:
    """Every callable a counted activation reaches a TorchFunctionMode as, mapped to its name."""
    table: dict[Any, str] = {}
    for name in ACTIVATIONS:
        for variant in (name, name + "_"):
            for owner in (F, torch, torch.Tensor, torch._C._nn):
                fn = getattr(owner, variant, None)
                if callable(fn):
                    table[fn] = name
    return table


_FUNCTIONS = _activation_functions()


def _hardtanh_min(args: tuple, kwargs: dict) -> Any:
    return args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)


def counted_call(func: Any, args: tuple, kwargs: dict) -> tuple[str, torch.Tensor] | None:
    """``(activation name, its input)`` when a torch call applies a counted activation, else None.

    The one test of "is this an activation" that every TorchFunctionMode of das shares (the
    patterns read here, PX's rewired forward), so they see exactly the same calls.
    """
    name = _FUNCTIONS.get(func)
    if name is None:
        return None
    pre = args[0] if args else kwargs.get("input", kwargs.get("self"))
    if not isinstance(pre, torch.Tensor) or (name == "hardtanh" and _hardtanh_min(args, kwargs) != 0):
        return None
    return name, pre


class ActivationWatch(TorchFunctionMode):
    """Calls every listener with the input of each counted activation, before the activation runs.

    The input is passed as the caller's tensor object (not a detached copy), so a listener can
    recognise a tensor it has seen by ``id`` and ``_version``; it must not modify it.
    """

    def __init__(self, listeners: Sequence[Listener]) -> None:
        super().__init__()
        self.listeners = list(listeners)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        call = counted_call(func, args, kwargs)
        if call is not None:
            for listen in self.listeners:
                listen(call[1])
        # The mode is suspended while this runs, so a module's or a function's inner calls
        # (nn.ReLU → F.relu → torch.relu) are not seen a second time.
        return func(*args, **kwargs)


def watch_activations(listeners: Sequence[Listener]) -> AbstractContextManager[Any]:
    """A context in which every counted activation call is reported to ``listeners`` (none: no-op)."""
    return ActivationWatch(listeners) if listeners else nullcontext()


def codes(pre: torch.Tensor) -> torch.Tensor:
    """B×N binary pattern of an activation input: 1 where the pre-activation is positive."""
    return pre.detach().flatten(1) > 0


class SeenInputs:
    """Recognises an activation input read before: the same live tensor, not modified in place since.

    Several activations often read one tensor (an NB201 node feeds each of its conv edges through
    its own ReLU); their patterns are equal, so each distinct input is computed once. A weak
    reference tells a recycled ``id`` from the same tensor, and ``_version`` an in-place change.
    """

    def __init__(self) -> None:
        self._seen: dict[int, tuple[Any, int, Any]] = {}

    def get(self, t: torch.Tensor) -> Any:
        """What :meth:`add` stored for ``t``, or None when ``t`` is new or changed since."""
        known = self._seen.get(id(t))
        if known is not None and known[0]() is t and known[1] == t._version:
            return known[2]
        return None

    def add(self, t: torch.Tensor, value: Any = True) -> None:
        self._seen[id(t)] = (weakref.ref(t), t._version, value)

    def clear(self) -> None:
        self._seen = {}


def no_activation_error(proxy: str, model: nn.Module) -> DasError:
    """The one-line refusal of a proxy whose network applies no activation it can read."""
    return DasError(
        f"{proxy} reads activation patterns, but the forward of {type(model).__name__} applies no activation das "
        f"recognises ({', '.join(ACTIVATIONS[:-1])}, as modules or functions); score it with proxies that do not read activations"
    )
