"""The Lightning data module that search.py and train.py build from the ``data:`` section of a YAML.

Every argument is typed and checked in ``__init__``, so a bad config fails before any data is
read or any model built. Loading happens once, lazily (``num_classes`` triggers it), and the
validation split is a seeded, stratified slice of the training split: the test split is never
used to choose anything.
"""

from __future__ import annotations

import os
from typing import Literal

import lightning as L
from torch.utils.data import DataLoader

from das.data.datasets import DATASETS, check_image_size, load_dataset, loader_options
from das.data.splits import DatasetSplits, ImageDataset, ImageSplit, stratified_split
from das.data.transforms import check_augment, check_norm, eval_transform, train_transform
from das.errors import DasError

SplitName = Literal["train", "val", "test"]


class DasDataModule(L.LightningDataModule):
    """In-memory image data for searching and distilling.

    Args:
        dataset: a registered dataset: digits (embedded, no download), cifar10, cifar100, npz,
            imagefolder, or one you registered in ``das.data.DATASETS``.
        root: where the dataset's files are: the folder holding cifar-10-batches-py (default
            ./data), the npz folder, or the imagefolder root; unused by digits.
        image_size: side of the square images, resized once at load; null keeps the dataset's
            size (16 for digits).
        mean: per-channel normalisation mean (0..1 scale); null: the dataset's default
            (0.5 for digits, ImageNet statistics for the others, as the CIFAR teachers expect).
        std: per-channel normalisation std; null: the dataset's default.
        augment: training augmentations, in order, from crop (random crop, padding size//8)
            and flip (random horizontal flip); [] for none; null: the dataset's default
            (digits: [crop]; others: [crop, flip]).
        batch_size: images per training and evaluation batch.
        num_workers: DataLoader worker processes (0 loads in the main process); capped at the
            CPUs this process may use, since more only contend for them (and PyTorch warns).
        val_fraction: fraction of each training class held out for validation, in [0, 1);
            0 disables validation.
        seed: seed of the validation split.
        download: let cifar10/cifar100 download into ``root`` when missing (needs internet).
        train_file: npz only: the training ``.npz`` (relative to ``root`` when given).
        test_file: npz only: the test ``.npz`` (relative to ``root`` when given).

    ``num_classes`` is read from the data (largest label + 1, or the dataset's class count) and
    is deliberately not an argument: Lightning merges this module's hyperparameters with the
    model's for the loggers and refuses a key that has two values, and train.py links
    ``data.num_classes`` into ``model.num_classes``. To force more outputs, call
    :func:`load_dataset` with ``num_classes=``.
    """

    def __init__(
        self,
        dataset: str = "digits",
        root: str | None = None,
        image_size: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        augment: list[str] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        download: bool = False,
        train_file: str | None = None,
        test_file: str | None = None,
    ) -> None:
        super().__init__()
        meta = DATASETS.meta(dataset)  # unknown names fail here, with close matches
        loader_options(dataset, root=root, download=download, train_file=train_file, test_file=test_file)
        check_image_size(image_size)
        check_norm(mean, std)
        self.augment = check_augment(meta.get("augment", ()) if augment is None else augment)
        for key, value, least in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise DasError(f"{key}={value!r} must be an integer >= {least}")
        if not 0.0 <= val_fraction < 1.0:
            raise DasError(f"val_fraction={val_fraction!r} must be in [0, 1): the fraction of the training set held out for validation (0 for none)")
        self.save_hyperparameters()
        self._splits: DatasetSplits | None = None
        self._subsets: dict[str, ImageSplit] = {}

    # Loading -------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Download once (Lightning calls this on one process only) when ``download`` is set."""
        if self.hparams.download:
            self._load()

    def setup(self, stage: str | None = None) -> None:
        """Load the data and carve the validation split; later calls do nothing."""
        if self._splits is not None:
            return
        splits = self._load()
        train_idx, val_idx = stratified_split(splits.train.labels, self.hparams.val_fraction, self.hparams.seed)
        self._subsets = {"train": splits.train.subset(train_idx), "val": splits.train.subset(val_idx), "test": splits.test}
        self._splits = splits

    def _load(self) -> DatasetSplits:
        h = self.hparams
        options = loader_options(h.dataset, root=h.root, download=h.download, train_file=h.train_file, test_file=h.test_file)
        return load_dataset(h.dataset, image_size=h.image_size, mean=h.mean, std=h.std, **options)

    # What the search and the distiller read -------------------------------------------------

    @property
    def splits(self) -> DatasetSplits:
        """The loaded dataset (train before the validation split is carved, and test)."""
        self.setup()
        assert self._splits is not None
        return self._splits

    @property
    def num_classes(self) -> int:
        """Classifier outputs; loads the data on first use."""
        return self.splits.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the models see."""
        return self.splits.image_shape

    @property
    def mean(self) -> tuple[float, ...]:
        return self.splits.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.splits.std

    def subset(self, split: SplitName) -> ImageSplit:
        """The raw ``uint8`` images of ``train`` (after the validation split), ``val`` or ``test``."""
        self.setup()
        if split not in self._subsets:
            raise DasError(f"split={split!r} is not one of train, val, test")
        return self._subsets[split]

    # Loaders --------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        train = self.subset("train")
        transform = train_transform(self.input_shape[-1], self.mean, self.std, self.augment)
        # A lone last image would make BatchNorm fail in training; dropping the remainder is
        # harmless since shuffling changes which images are left out each epoch.
        return self._loader(ImageDataset(train, transform), shuffle=True, drop_last=len(train) > self.hparams.batch_size)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        val = self.subset("val")
        if not len(val):
            return []  # val_fraction=0 (or a tiny set): Lightning then skips validation
        return self._loader(ImageDataset(val, eval_transform(self.mean, self.std)))

    def test_dataloader(self) -> DataLoader:
        return self._loader(ImageDataset(self.subset("test"), eval_transform(self.mean, self.std)))

    def _loader(self, dataset: ImageDataset, shuffle: bool = False, drop_last: bool = False) -> DataLoader:
        workers = min(self.hparams.num_workers, usable_cpus())
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,  # DataLoader refuses it without workers
        )


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one), as PyTorch's DataLoader counts them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
