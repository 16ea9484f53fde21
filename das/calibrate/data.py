"""The images a population of students trains and is tested on, fixed and fingerprinted.

A calibration run compares many students under one recipe, so the data must be the same for
all of them and for a resumed run: it is held as ``uint8`` tensors (the form the data module
loads), normalised per batch with the data module's own evaluation transform, and identified in
the results file by a digest of its bytes rather than by how it was loaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from das.data.datamodule import DasDataModule
from das.data.splits import ImageSplit
from das.data.transforms import eval_transform
from das.errors import DasError


@dataclass(frozen=True)
class PopulationData:
    """A training and a test split of ``uint8`` images and how to normalise them.

    Attributes:
        train: the images every student trains on (a teacher cache is built over them).
        test: the images every student is tested on.
        mean: per-channel normalisation mean, 0..1 scale.
        std: per-channel normalisation standard deviation.
        num_classes: classifier outputs.
    """

    train: ImageSplit
    test: ImageSplit
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.train) < 2 or len(self.test) < 1:
            raise DasError(f"a population needs at least 2 training and 1 test image, got {len(self.train)} and {len(self.test)}")
        if self.train.image_shape != self.test.image_shape:
            raise DasError(f"train images are {self.train.image_shape} but test images {self.test.image_shape}; give one image shape")

    @classmethod
    def from_datamodule(cls, dm: DasDataModule, train_images: int | None = None, seed: int = 0) -> PopulationData:
        """The data module's training split (after its validation split) and its test split.

        Args:
            dm: a configured data module (it is loaded here).
            train_images: keep a stratified, seeded subset of this many training images; None keeps all.
            seed: the subset's seed.
        """
        keep = None
        if train_images is not None:
            if not 2 <= train_images <= (have := dm.split_size("train")):
                raise DasError(f"train_images={train_images} must be between 2 and the {have} training images")
            keep = dm.stratified("train", train_images, seed)  # only these are decoded from a streamed dataset
        return cls(dm.subset("train", keep), dm.subset("test"), dm.mean, dm.std, dm.num_classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8`` N×C×H×W → normalised float32, exactly as the data module's evaluation transform does it."""
        return eval_transform(self.mean, self.std)(images)

    def digest(self) -> str:
        """A short SHA-256 of the images, labels and normalisation: equal digests mean the same data."""
        h = hashlib.sha256()
        for split in (self.train, self.test):
            h.update(split.images.contiguous().numpy().tobytes())
            h.update(split.labels.contiguous().numpy().tobytes())
        h.update(repr((self.mean, self.std, self.num_classes)).encode())
        return h.hexdigest()[:16]
