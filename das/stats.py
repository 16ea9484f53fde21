"""Size and speed of a network: parameters, FLOPs and forward latency, the budgets a search is constrained by."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on a single input of ``input_shape`` (C, H, W).

    Counted by ``torch.utils.flop_counter`` (convolutions and matrix products, 2 FLOPs per
    multiply-accumulate), in eval mode so the model's state does not move.
    """
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


#: Timed forward passes per latency measurement (after one untimed warm-up); the median is kept.
LATENCY_REPEATS = 5


def forward_latency_ms(model: nn.Module, x: torch.Tensor, repeats: int = LATENCY_REPEATS) -> float:
    """Median wall time (ms) of ``repeats`` forward passes of ``model`` on ``x``, after one warm-up.

    Eval mode and no gradients, as a deployed network runs; CUDA is synchronised around each
    pass so the time is the kernels', not the launch's. The median, because a stray pause of the
    machine hits one pass, not the middle one.
    """
    import statistics
    import time

    was_training = model.training
    model.eval()
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    times = []
    try:
        with torch.no_grad():
            model(x)
            for _ in range(repeats):
                sync()
                start = time.perf_counter()
                model(x)
                sync()
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        model.train(was_training)
    return statistics.median(times)


def meta_params(build: Callable[[], nn.Module]) -> int | None:
    """Trainable parameters of the network ``build()`` makes, built on the meta device.

    Shapes only: no memory is allocated and no weight initialised, so a giant candidate that a
    budget rejects costs nothing. None when the builder cannot run on the meta device (it then
    has to be built for real).
    """
    try:
        with torch.device("meta"):
            model = build()
    except Exception:  # noqa: BLE001  (a builder that reads weight values, moves tensors to a device, ...)
        return None
    return count_params(model)
