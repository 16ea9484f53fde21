"""The registry of saliency methods for pruning at initialisation.

A saliency method scores every prunable weight of a network (higher = keep); the pruner in
:mod:`das.prune.at_init` keeps the highest scores, once or over many rounds. A method is a
function ``(inputs: ScoringInputs) -> {weight name: score tensor}`` registered with what it
reads (real batches, labels) and how many rounds it runs by default, so a config or a command
line can name it and ``prune_at_init`` can refuse a call that lacks what the method needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from das.registry import Registry

Batch = tuple[torch.Tensor, torch.Tensor | None]


@dataclass(frozen=True)
class ScoringInputs:
    """What a saliency method may read in one round.

    Attributes:
        model: the network, its pruned weights already set to zero (restored by the caller).
        masks: the current bool mask of every prunable weight (``"<layer>.weight"``), in
            ``named_modules()`` order; a method scores the network these masks describe.
        batches: probe batches ``(x, y)`` on the model's device (``y`` may be None); empty for
            a data-free call.
        input_shape: the shape of one input (without the batch dimension), for data-free passes.
        generator: the seeded CPU generator of this call (``random`` draws from it).
        seed: the call's seed, for methods that run seeded forward passes (SNIP's dropout).
    """

    model: nn.Module
    masks: Mapping[str, torch.Tensor]
    batches: Sequence[Batch]
    input_shape: tuple[int, ...]
    generator: torch.Generator
    seed: int = 0


SaliencyFn = Callable[[ScoringInputs], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Saliency:
    """A registered saliency method.

    Attributes:
        name: the registry name.
        fn: scores every prunable weight; a score of a pruned weight is ignored.
        needs_data: the scores read real inputs (``batches=`` is required).
        needs_labels: they read labels too (a loss on the batches).
        rounds: the default number of pruning rounds (1 = one shot).
    """

    name: str
    fn: SaliencyFn
    needs_data: bool = False
    needs_labels: bool = False
    rounds: int = 1


SALIENCIES: Registry[Saliency] = Registry("pruning method")


def register_saliency(
    name: str, *, needs_data: bool = False, needs_labels: bool = False, rounds: int = 1
) -> Callable[[SaliencyFn], SaliencyFn]:
    """Decorator: register ``fn`` as the saliency method ``name``."""

    def decorator(fn: SaliencyFn) -> SaliencyFn:
        SALIENCIES.add(name, Saliency(name, fn, needs_data or needs_labels, needs_labels, rounds))
        return fn

    return decorator
