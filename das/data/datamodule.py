"""The Lightning data module that search.py and train.py build from the ``data:`` section of a YAML.

Every argument is typed and checked in ``__init__``, so a bad config fails before any data is
read or any model built. Loading happens once, lazily (``num_classes`` triggers it), and the
validation split is a seeded, stratified slice of the training split: the test split is never
used to choose anything.

A streamed dataset (``folder``, ``webdataset``: :mod:`das.data.streamed`) is indexed, not
loaded: its loaders decode and transform each image in the DataLoader workers, and the few
images the search holds in memory (probe batches, a population's subset) are decoded on demand
through the evaluation transform, up to :data:`das.data.streamed.IN_MEMORY_BYTES`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from das.data.datasets import DATASETS, check_image_size, is_streamed, load_dataset, loader_options
from das.data.splits import DatasetSplits, ImageDataset, ImageSplit, stratified_split
from das.data.streamed import Source, StreamedSplits, hold_in_memory
from das.data.transforms import (
    TIMM_PREFIX,
    check_augment,
    check_norm,
    check_recipe,
    eval_transform,
    image_pipeline,
    resolve_recipe,
    timm_data_config,
    train_transform,
)
from das.errors import DasError

SplitName = Literal["train", "val", "test"]


class DasDataModule(L.LightningDataModule):
    """Image data for searching and distilling: held in memory, or streamed from files.

    Args:
        dataset: a registered dataset: digits (embedded, no download), cifar10, cifar100, npz,
            imagefolder (all in memory), folder (an image folder read lazily), webdataset (tar
            shards), or one you registered in ``das.data.DATASETS``.
        root: where the dataset's files are: the folder holding cifar-10-batches-py (default
            ./data), the npz folder, the imagefolder/folder root, or the shard directory;
            unused by digits.
        image_size: side of the square images: in memory, resized once at load (null keeps
            the dataset's size, 16 for digits); streamed, each image's size after its
            transform (required, unless transform=timm:MODEL gives the model's own).
        mean: per-channel normalisation mean (0..1 scale); null: the dataset's default
            (0.5 for digits, ImageNet statistics for the others, as the CIFAR teachers expect;
            a timm model's own with transform=timm:MODEL).
        std: per-channel normalisation std; null: the dataset's default.
        augment: training augmentations, in order, from crop (random crop, padding size//8;
            with the imagenet recipe the random resized crop) and flip (random horizontal
            flip); [] for none; null: the dataset's default (digits: [crop]; others: [crop, flip]).
        transform: how a streamed dataset's images are brought to size: auto (imagenet above
            64 px, else cifar), cifar (resize, then pad-and-crop), imagenet (random resized crop
            for training; resize to size/0.875 and centre crop for evaluation), or timm:MODEL
            (timm's transforms with that model's pretrained data config, e.g.
            timm:resnet50.a1_in1k); in-memory datasets take auto (their cifar recipe).
        batch_size: images per training and evaluation batch.
        num_workers: DataLoader worker processes (0 loads in the main process); capped at the
            CPUs this process may use, since more only contend for them (and PyTorch warns).
            A streamed dataset decodes in them: give it as many as the model leaves CPUs free.
        val_fraction: fraction of each training class held out for validation, in [0, 1);
            0 disables validation. With webdataset, that fraction of whole training shards.
        seed: seed of the validation split (and of a webdataset's shuffling).
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
        transform: str = "auto",
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
        self.streamed = is_streamed(dataset)
        check_recipe(transform, self.streamed)
        if self.streamed and image_size is None and not transform.startswith(TIMM_PREFIX):
            raise DasError(f"dataset={dataset} is read image by image at no fixed size, so it needs image_size (e.g. 224 for "
                           f"ImageNet-style photos, 32 for CIFAR-sized images), or transform=timm:MODEL for a timm model's own size")
        for key, value, least in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise DasError(f"{key}={value!r} must be an integer >= {least}")
        if not 0.0 <= val_fraction < 1.0:
            raise DasError(f"val_fraction={val_fraction!r} must be in [0, 1): the fraction of the training set held out for validation (0 for none)")
        self.save_hyperparameters()
        self._splits: DatasetSplits | StreamedSplits | None = None
        self._subsets: dict[str, ImageSplit] = {}
        self._sources: dict[str, Source] = {}
        self._size, self._recipe = image_size, transform  # a streamed dataset's; resolved at load (timm's size)

    # Loading -------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Download once (Lightning calls this on one process only) when ``download`` is set."""
        if self.hparams.download:
            self._load()

    def setup(self, stage: str | None = None) -> None:
        """Load (or, streamed, index) the data and carve the validation split; later calls do nothing."""
        if self._splits is not None:
            return
        h = self.hparams
        if self.streamed:
            streamed = self._index()
            train, val = streamed.train.hold_out(h.val_fraction, h.seed)
            self._sources = {"train": train, "val": val, "test": streamed.test}
            self._splits = streamed
            return
        splits = self._load()
        train_idx, val_idx = stratified_split(splits.train.labels, h.val_fraction, h.seed)
        self._subsets = {"train": splits.train.subset(train_idx), "val": splits.train.subset(val_idx), "test": splits.test}
        self._splits = splits

    def _load(self) -> DatasetSplits:
        h = self.hparams
        options = loader_options(h.dataset, root=h.root, download=h.download, train_file=h.train_file, test_file=h.test_file)
        return load_dataset(h.dataset, image_size=h.image_size, mean=h.mean, std=h.std, **options)

    def _index(self) -> StreamedSplits:
        """A streamed dataset's file index, its normalisation and its image size (a timm model's when asked)."""
        h = self.hparams
        splits: StreamedSplits = DATASETS.get(h.dataset)(**loader_options(h.dataset, root=h.root))
        mean, std = splits.mean, splits.std
        if h.transform.startswith(TIMM_PREFIX):
            config = timm_data_config(h.transform[len(TIMM_PREFIX):], h.image_size)
            self._size = int(config["input_size"][-1])
            mean, std = config["mean"], config["std"]
        self._recipe = resolve_recipe(h.transform, self._size)
        splits.mean = tuple(float(m) for m in (h.mean if h.mean is not None else mean))
        splits.std = tuple(float(s) for s in (h.std if h.std is not None else std))
        check_norm(splits.mean, splits.std, 3)
        return splits

    # What the search and the distiller read -------------------------------------------------

    @property
    def splits(self) -> DatasetSplits | StreamedSplits:
        """The loaded dataset (train before the validation split is carved, and test), or a streamed one's index."""
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
        if self.streamed:
            self.setup()
            return (3, self._size, self._size)
        return self.splits.image_shape

    @property
    def recipe(self) -> str:
        """The transform recipe the images go through: ``cifar``, ``imagenet`` or ``timm:MODEL`` (``auto`` resolved)."""
        self.setup()
        return self._recipe if self.streamed else "cifar"

    @property
    def mean(self) -> tuple[float, ...]:
        return self.splits.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.splits.std

    def subset(self, split: SplitName, indices: Tensor | None = None) -> ImageSplit:
        """The ``uint8`` images of ``train`` (after the validation split), ``val`` or ``test``, all or those at ``indices``.

        A streamed split is decoded now through the evaluation transform (so it holds the images the
        models are evaluated on), and refused past :data:`das.data.streamed.IN_MEMORY_BYTES`.
        """
        self.setup()
        if split not in ("train", "val", "test"):
            raise DasError(f"split={split!r} is not one of train, val, test")
        if not self.streamed:
            whole = self._subsets[split]
            return whole if indices is None else whole.subset(indices)
        source = self._sources[split]
        chosen = torch.arange(len(source)) if indices is None else indices
        return hold_in_memory(source, chosen, self._pipeline(train=False, normalise=False), self.input_shape,
                              f"the {split} split of dataset={self.hparams.dataset}")

    def split_size(self, split: SplitName) -> int:
        """How many images ``split`` holds (without decoding a streamed one)."""
        self.setup()
        if split not in ("train", "val", "test"):
            raise DasError(f"split={split!r} is not one of train, val, test")
        return len(self._sources[split] if self.streamed else self._subsets[split])

    def draw(self, split: SplitName, n: int, seed: int) -> Tensor:
        """Indices of ``n`` images of ``split`` drawn without replacement from ``seed``: a seeded permutation's first
        ``n``, or for shards (read in order only) the first ``n`` in shard order, a random draw when the shards
        were written shuffled (as :func:`das.data.shards.write_shards` writes them)."""
        size = self.split_size(split)
        if self.streamed and not self._sources[split].random_access:
            return torch.arange(min(n, size))
        return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n]

    def stratified(self, split: SplitName, n: int, seed: int) -> Tensor:
        """Sorted indices of a seeded subset of about ``n`` images of ``split`` holding every class in proportion
        (:func:`das.data.splits.stratified_split`); for shards the first ``n`` in shard order."""
        self.setup()
        if not self.streamed:
            labels = self._subsets[split].labels
        elif self._sources[split].random_access:
            labels = self._sources[split].labels()  # type: ignore[attr-defined]
        else:
            return torch.arange(min(n, self.split_size(split)))
        _, keep = stratified_split(labels, n / len(labels), seed)
        return keep

    # Loaders --------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        # A lone last image would make BatchNorm fail in training; dropping the remainder is
        # harmless since shuffling changes which images are left out each epoch.
        drop_last = self.split_size("train") > self.hparams.batch_size
        return self._loader(self._dataset("train"), shuffle=True, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        if not self.split_size("val"):
            return []  # val_fraction=0 (or a tiny set): Lightning then skips validation
        return self._loader(self._dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test"))

    def _dataset(self, split: SplitName) -> Dataset:
        self.setup()
        train = split == "train"
        if self.streamed:
            return self._sources[split].dataset(self._pipeline(train, normalise=True), shuffle=train, seed=self.hparams.seed)
        transform = train_transform(self.input_shape[-1], self.mean, self.std, self.augment) if train else eval_transform(self.mean, self.std)
        return ImageDataset(self.subset(split), transform)

    def _pipeline(self, train: bool, normalise: bool) -> Callable[[Any], Tensor]:
        """A streamed image's transform: decoded PIL image → C×H×W at the module's size (normalised float, or uint8)."""
        self.setup()
        stats = (self.mean, self.std) if normalise else (None, None)
        return image_pipeline(self._recipe, self._size, train, self.augment, *stats)

    def _loader(self, dataset: Dataset, shuffle: bool = False, drop_last: bool = False) -> DataLoader:
        workers = min(self.hparams.num_workers, usable_cpus())
        iterable = isinstance(dataset, torch.utils.data.IterableDataset)
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle and not iterable,  # shards shuffle themselves (shard order, then a sample buffer)
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,  # DataLoader refuses it without workers
            # Page-locked batches copy to a GPU asynchronously; without one there is nothing to gain.
            pin_memory=torch.cuda.is_available(),
        )


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one), as PyTorch's DataLoader counts them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
