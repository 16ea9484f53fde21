"""In-memory image splits: uint8 tensors plus labels, and the helpers that carve and resize them.

das scores untrained students on a few probe batches and distils on small datasets (digits,
CIFAR-sized arrays), so every dataset is held in memory as one ``uint8`` tensor N×C×H×W and one
``int64`` label tensor. That makes splits exact index sets (easy to check for overlap and to
reproduce), resizing a one-off cost at load time, and probe batches a plain index lookup.
Transforms (augmentation, normalisation) are applied per item by :class:`ImageDataset`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset


@dataclass
class ImageSplit:
    """One split of a dataset.

    Attributes:
        images: ``uint8`` N×C×H×W, values 0..255.
        labels: ``int64`` N, class indices.
    """

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        # These are programming errors inside das (loaders build splits), not user input.
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 N×C×H×W, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 of shape ({len(self.images)},), got {self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, indices: Tensor) -> ImageSplit:
        """The images at ``indices`` (a copy, so the parent can be freed)."""
        return ImageSplit(self.images[indices], self.labels[indices])


@dataclass
class DatasetSplits:
    """What ``load_dataset`` returns: a train and a test split and how to normalise them.

    Attributes:
        name: the registry name of the dataset.
        train: the training split (the data module carves its validation split from it).
        test: the held-out test split; never used for model selection.
        num_classes: classifier outputs needed.
        mean: per-channel mean of the normalisation, on the 0..1 scale.
        std: per-channel standard deviation of the normalisation.
        classes: class names in label order, when the dataset knows them.
    """

    name: str
    train: ImageSplit
    test: ImageSplit
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str] | None = field(default=None)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image, train and test alike."""
        return self.train.image_shape


class ImageDataset(Dataset[tuple[Tensor, Tensor]]):
    """A split seen through a per-item transform (augmentation, then uint8 → normalised float).

    Args:
        split: the images and labels.
        transform: applied to each ``uint8`` C×H×W image; identity when ``None``.
    """

    def __init__(self, split: ImageSplit, transform: Callable[[Tensor], Tensor] | None = None) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.split.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.split.labels[index]


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split indices into (kept, held out), holding out ``fraction`` of every class.

    Stratified so that small held-out sets still see every class in proportion; seeded with its
    own generator so the split depends on ``seed`` alone, never on the global RNG state.
    Both index tensors are sorted.
    """
    generator = torch.Generator().manual_seed(seed)
    kept: list[Tensor] = []
    held: list[Tensor] = []
    for label in torch.unique(labels):  # sorted, so the draw order is fixed
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_held = int(fraction * len(members) + 0.5)  # round half up, unlike Python's round()
        held.append(members[:n_held])
        kept.append(members[n_held:])
    empty = torch.empty(0, dtype=torch.int64)
    return torch.cat([empty, *kept]).sort().values, torch.cat([empty, *held]).sort().values


def resize_images(images: Tensor, size: int, chunk: int = 4096) -> Tensor:
    """Resize ``uint8`` N×C×H×W images to size×size (bilinear, antialiased), staying ``uint8``.

    Done once at load time rather than per item, so training pays nothing for it. Chunked so
    that upsampling 50k images does not need the whole float copy at once.
    """
    if tuple(images.shape[-2:]) == (size, size):
        return images
    out = [
        F.interpolate(part.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for part in images.split(chunk)
    ]
    return torch.cat(out) if out else images.new_empty((0, images.shape[1], size, size))
