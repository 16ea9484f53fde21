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


#: A teacher less than this many points above chance (100 / classes %) is flagged: it has learnt
#: next to nothing, so a ranking against it, or a distillation from it, is against noise.
NEAR_CHANCE_POINTS = 10.0


def near_chance(acc: float, num_classes: int, margin: float = NEAR_CHANCE_POINTS) -> str | None:
    """When top-1 ``acc`` (%) is within ``margin`` points of chance, the words that say so; else None."""
    chance = 100.0 / num_classes
    if acc >= chance + margin:
        return None
    return f"at {acc:.2f}% top-1 on the test split, near chance ({chance:.2f}% for {num_classes} classes)"
