"""Probe batches: the fixed minibatches on which zero-cost proxies score untrained students.

A proxy ranks architectures by one or two forward/backward passes, so every candidate of a
study must see exactly the same images: the batches are drawn with their own seeded generator
(never the global RNG) and seen through the evaluation transform (normalised, not augmented).
From a streamed dataset only the drawn images are decoded (from shards, the first ones in shard
order: :meth:`DasDataModule.draw`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from das.data.datamodule import DasDataModule
from das.data.splits import DatasetSplits
from das.data.transforms import eval_transform
from das.errors import DasError


def probe_batches(
    datamodule_or_splits: DasDataModule | DatasetSplits,
    batch_size: int = 64,
    num_batches: int = 1,
    seed: int = 0,
    split: str = "train",
) -> list[tuple[Tensor, Tensor]]:
    """``num_batches`` disjoint batches of ``batch_size`` images, the same for the same ``seed``.

    Args:
        datamodule_or_splits: a data module (set up on demand) or a loaded dataset.
        batch_size: images per batch.
        num_batches: how many batches (drawn without replacement, so they never overlap).
        seed: which images are drawn.
        split: ``train`` (the data module's training images, i.e. after the validation split),
            ``val`` (data module only) or ``test``.

    Returns:
        ``(images, labels)`` pairs: float N×C×H×W normalised, and int64 N.
    """
    for key, value in (("batch_size", batch_size), ("num_batches", num_batches)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DasError(f"probe {key}={value!r} must be a positive integer")
    wanted = batch_size * num_batches
    source = datamodule_or_splits
    if isinstance(source, DasDataModule):
        if split not in ("train", "val", "test"):
            raise DasError(f"split={split!r} is not one of train, val, test")
        have, name = source.split_size(split), source.hparams.dataset  # type: ignore[arg-type]
        _check_enough(wanted, have, num_batches, batch_size, split, name)
        # Only the chosen images are decoded when the data is streamed.
        chosen = source.subset(split, source.draw(split, wanted, seed))  # type: ignore[arg-type]
        data, order, mean, std = chosen, torch.arange(wanted), source.mean, source.std
    elif isinstance(source, DatasetSplits):
        if split not in ("train", "test"):
            raise DasError(f"split={split!r} is not one of train, test (a loaded dataset has no val split; use a DasDataModule)")
        data, mean, std = getattr(source, split), source.mean, source.std
        _check_enough(wanted, len(data), num_batches, batch_size, split, source.name)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:wanted]
    else:
        raise DasError(f"probe_batches needs a DasDataModule or DatasetSplits, got {type(source).__name__}")
    transform = eval_transform(mean, std)  # the v2 transforms also take a whole N×C×H×W batch
    return [(transform(data.images[idx]), data.labels[idx]) for idx in order.split(batch_size)]


def _check_enough(wanted: int, have: int, num_batches: int, batch_size: int, split: str, name: str) -> None:
    if wanted > have:
        raise DasError(
            f"{num_batches} probe batch(es) of {batch_size} need {wanted} images but the {split} split of {name} has {have}; "
            f"lower the probe batch size or count"
        )
