"""Leave a scored model exactly as it was: weights, buffers, modes, requires_grad and grads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Snapshot the model's state and restore it on exit, even when scoring fails.

    Scoring runs the model in train mode (BatchNorm uses batch statistics, as every zero-cost
    proxy paper does at initialisation), which would otherwise move the running statistics.
    """
    state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    grads = {name: None if p.grad is None else p.grad.detach().clone() for name, p in model.named_parameters()}
    try:
        yield model
    finally:
        with torch.no_grad():
            current = model.state_dict(keep_vars=True)
            for key, value in state.items():
                current[key].copy_(value)
        for name, m in model.named_modules():
            m.training = modes[name]
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
            p.grad = grads[name]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the block, every module's own mode restored on exit (passes that must not use batch statistics)."""
    with _mode(model, False):
        yield model


@contextmanager
def train_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Train mode for the block (BatchNorm on batch statistics), every module's own mode restored on exit."""
    with _mode(model, True):
        yield model


@contextmanager
def _mode(model: nn.Module, training: bool) -> Iterator[None]:
    modes = {m: m.training for m in model.modules()}
    model.train(training)
    try:
        yield
    finally:
        for m, was in modes.items():
            m.training = was


@contextmanager
def batchnorm_forwards(model: nn.Module, forward_of: Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor]]) -> Iterator[None]:
    """Every BatchNorm's forward replaced by ``forward_of(module)`` for the block, each module's own restored on exit.

    An instance attribute shadows the class's forward; a forward a module already had as an
    instance attribute is put back, any other is deleted.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    own = {m: m.__dict__["forward"] for m in norms if "forward" in m.__dict__}
    try:
        for m in norms:
            m.forward = forward_of(m)  # type: ignore[method-assign]
        yield
    finally:
        for m in norms:
            if m in own:
                m.forward = own[m]  # type: ignore[method-assign]
            else:
                del m.forward
