"""Top-1 accuracy of a network on a loader: the one number search and training both report.

Search reports its teacher's accuracy on the same held-out split that train.py tests students
on, so a user can tell a weak teacher (whose students may do worse distilled than alone) from
a good one before spending a training run.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def top1_accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device | str | None = None) -> float:
    """Top-1 accuracy in % over ``batches``, in eval mode; the model's mode is restored after."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    correct = total = 0
    model.eval()
    try:
        with torch.inference_mode():
            for x, y in batches:
                logits = model(x.to(device))
                correct += int((logits.argmax(dim=1) == y.to(device)).sum())
                total += len(y)
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("top1_accuracy needs at least one labelled image")
    return 100.0 * correct / total
