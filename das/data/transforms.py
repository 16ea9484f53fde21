"""Augmentation and normalisation, built from config names (torchvision.transforms.v2 on tensors).

Training transforms augment the ``uint8`` image first (crops pad with black, as in the CIFAR
ResNet recipe of He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §4.2),
then scale to 0..1 and normalise. Evaluation transforms never augment: validation, test and the
probe batches that zero-cost proxies score must be the same images every time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torchvision.transforms import v2

from das.errors import DasError

# Each entry builds the transform for square images of the given side.
AUGMENTATIONS: dict[str, Callable[[int], v2.Transform]] = {
    # A size//8 padding is the usual 4 pixels at 32×32, scaled for other sizes.
    "crop": lambda size: v2.RandomCrop(size, padding=size // 8),
    "flip": lambda size: v2.RandomHorizontalFlip(),
}


def check_augment(names: str | Iterable[str]) -> tuple[str, ...]:
    """Validate augmentation names; a single name is accepted as a one-item list."""
    if isinstance(names, str):
        names = [names]
    names = list(names)
    accepted = ", ".join(AUGMENTATIONS)
    for name in names:
        if name not in AUGMENTATIONS:
            raise DasError(f"unknown augmentation {name!r} in augment={names}; accepted: {accepted} (or [] for none)")
    return tuple(dict.fromkeys(names))  # drop repeats, keep order


def check_norm(mean: Sequence[float] | None, std: Sequence[float] | None, channels: int | None = None) -> None:
    """Validate normalisation statistics (optionally against the images' channel count)."""
    for key, values in (("mean", mean), ("std", std)):
        if values is None:
            continue
        if channels is not None and len(values) != channels:
            raise DasError(f"{key}={list(values)} has {len(values)} values but the images have {channels} channels; give one per channel")
    if mean is not None and std is not None and len(mean) != len(std):
        raise DasError(f"mean={list(mean)} and std={list(std)} differ in length; give one value per channel to each")
    if std is not None and any(s <= 0 for s in std):
        raise DasError(f"std={list(std)} must be positive in every channel; use e.g. [0.5, 0.5, 0.5]")


def eval_transform(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """``uint8`` → float in 0..1 → normalised. Works on one C×H×W image or an N×C×H×W batch."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def train_transform(image_size: int, mean: Sequence[float], std: Sequence[float], augment: Iterable[str] = ()) -> v2.Compose:
    """The named augmentations (in the given order) on the ``uint8`` image, then :func:`eval_transform`."""
    steps = [AUGMENTATIONS[name](image_size) for name in check_augment(augment)]
    return v2.Compose([*steps, eval_transform(mean, std)])
