"""What a calibration and a finalist race share: short distillations of a few students, judged on validation.

Both distil a handful of students briefly on the search's training images and judge them on its
validation split (the test split never chooses anything): the same checks of their settings
and the same data.
"""

from __future__ import annotations

from typing import Any

from das.calibrate.data import PopulationData
from das.data import DasDataModule
from das.errors import DasError


def is_integer(value: Any) -> bool:
    """An int that is not a bool (YAML's true would pass isinstance(value, int))."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_short_runs(section: str, cfg: Any, val_fraction: float, what: str) -> None:
    """The checks a calibration and a race share: epochs, seed, train_images, and a validation split to judge on."""
    if not is_integer(cfg.epochs) or cfg.epochs < 1:
        raise DasError(f"{section}.epochs={cfg.epochs!r} must be a positive integer: the epochs each {what} is distilled for")
    if not is_integer(cfg.seed):
        raise DasError(f"{section}.seed={cfg.seed!r} must be an integer")
    if cfg.train_images is not None and (not is_integer(cfg.train_images) or cfg.train_images < 2):
        raise DasError(f"{section}.train_images={cfg.train_images!r} must be at least 2, or null for all the training images")
    if not val_fraction:
        raise DasError(f"the {what}s are judged on the validation split (the test split never chooses anything), "
                       "but data.val_fraction=0; set data.val_fraction (0.1 is typical)")


def population_data(data: DasDataModule, train_images: int | None, seed: int) -> PopulationData:
    """The search's training images (or a stratified subset of ``train_images``), tested on its validation split."""
    keep = None
    if train_images is not None and train_images < data.split_size("train"):
        keep = data.stratified("train", train_images, seed)  # only these are decoded from a streamed dataset
    return PopulationData(data.subset("train", keep), data.subset("val"), data.mean, data.std, data.num_classes)
