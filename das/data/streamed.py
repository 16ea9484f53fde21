"""Streamed image data: datasets too large to hold in memory, decoded and augmented in DataLoader workers.

The in-memory datasets (:mod:`das.data.datasets`) hold every image as ``uint8``: ImageNet's
1.28 M images at 224 px would need ~190 GB. A streamed dataset holds where its images are
instead, and each DataLoader worker opens, decodes and transforms (:func:`das.data.transforms.image_pipeline`)
the images of its batches. What the main process holds is an index: for a folder, the paths
relative to its root and the labels, as two numpy arrays (a few dozen bytes per image, not the
pixels; numpy rather than Python lists because forked workers that touch Python objects copy the
pages those objects live on, and memory then grows with every image read); for shards
(:mod:`das.data.shards`), the shard file names and their sample counts.

- ``folder``: ``root/train/<class>/*`` and ``root/test/<class>/*`` (or ``root/val``), the
  ImageNet layout, read lazily: any number of images, at any size.
- ``webdataset``: tar shards described by an ``_info.json`` (:mod:`das.data.shards`).

A source answers :class:`Source`'s few questions (how many images, a held-out part, a Dataset
through a transform, some images in memory); :class:`~das.data.datamodule.DasDataModule` builds
its loaders and probe batches from them.

An image that cannot be decoded stops the run with a :class:`~das.errors.DasError` naming the
file: the data a model was trained on is then exactly the dataset, never the dataset less the
files that happened to fail to decode, and the first epoch reads every file, so a bad one shows
early; train.py resumes from the last checkpoint
once it is replaced (``--ckpt_path last``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from das.data.splits import ImageSplit, stratified_split
from das.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from das.errors import DasError

#: The most bytes of decoded ``uint8`` images a streamed dataset holds in memory at once: probe
#: batches, a population's training subset and its validation images. 2 GiB is 14k images at
#: 224 px or 700k at 32 px; past it, hold fewer (``calibrate.train_images``, ``val_fraction``).
IN_MEMORY_BYTES = 2 * 2**30

def decode(data: bytes | str | Path, name: str) -> Any:
    """Open an encoded image (a path or its bytes) as an RGB PIL image; an unreadable one is a one-line DasError naming ``name``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            return img.convert("RGB")  # decodes all of it, so a truncated file fails here, in the worker
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise DasError(f"cannot decode image {name} ({' '.join(str(err).split())}); images must be files PIL opens "
                       f"(JPEG, PNG, WebP, ...): replace or delete it and rerun (an unreadable image stops the run, docs/guide.md)") from None


class Source(Protocol):
    """What a streamed split answers; :class:`ImageFiles` and :class:`das.data.shards.Shards` are the two."""

    #: Any image can be read alone (a folder), rather than only in order (shards).
    random_access: bool

    def __len__(self) -> int: ...

    def hold_out(self, fraction: float, seed: int) -> tuple[Source, Source]:
        """(kept, held out) parts: the held-out part is the validation split."""

    def dataset(self, transform: Callable[[Any], Tensor], shuffle: bool, seed: int) -> Dataset:
        """A Dataset of (transformed image, label) that decodes as it is read, in the worker reading it."""

    def read(self, indices: Tensor, transform: Callable[[Any], Tensor]) -> tuple[list[Tensor], Tensor]:
        """The images at ``indices`` (transformed) and their labels, in this process."""


def check_root(root: str | Path | None, name: str) -> tuple[Path, Path]:
    """``root``'s ``train`` folder and its ``test`` (or ``val``) folder, or a one-line error naming what is there."""
    if root is None:
        raise DasError(f"dataset={name} needs root=FOLDER with train/ and test/ (or val/) subfolders of class folders")
    base = Path(root).expanduser().resolve()
    test_dir = next((base / n for n in ("test", "val") if (base / n).is_dir()), None)
    if not (base / "train").is_dir() or test_dir is None:
        found = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else "nothing (no such folder)"
        raise DasError(f"{name} root {base} must hold train/ and test/ (or val/) subfolders; found {found}")
    return base / "train", test_dir


def find_classes(train: Path) -> list[str]:
    """The class folders of ``train``, sorted as torchvision's ImageFolder sorts them; fewer than two is an error."""
    classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DasError(f"{train} holds {len(classes)} class folder(s) {classes}; a classifier needs at least 2 classes, one subfolder of images each")
    return classes


def index_folder(folder: Path, classes: list[str], allow_empty: bool) -> tuple[np.ndarray, np.ndarray]:
    """The image files under ``folder/<class>/`` as paths relative to ``folder`` and int64 labels.

    In torchvision's ImageFolder order and with its file suffixes (so the eager ``imagefolder``
    loader sees the same images in the same order), one class at a time, so only one class's
    Python strings exist at once. A training class without images is an error.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    paths: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    empty = []
    for label, name in enumerate(classes):
        found = [p for p, _ in make_dataset(str(folder), {name: label}, extensions=IMG_EXTENSIONS, allow_empty=True)]
        if not found and (folder / name).is_dir():
            empty.append(name)
        # Fixed-width bytes: one buffer the workers share, never copied by reference counting.
        paths.append(np.array([str(Path(p).relative_to(folder)).encode() for p in found], dtype=np.bytes_))
        labels.append(np.full(len(found), label, dtype=np.int64))
    total = sum(len(p) for p in paths)
    if not allow_empty and (empty or not total):
        where = f"class folder(s) {empty} of {folder}" if empty else f"{folder}/<class>/"
        raise DasError(f"no images in {where} (looked for {', '.join(IMG_EXTENSIONS)}); put each class's training images in its subfolder, or remove the empty one")
    width = max((p.dtype.itemsize for p in paths if len(p)), default=1)
    return np.concatenate([p.astype(f"S{width}") for p in paths]) if total else np.empty(0, "S1"), np.concatenate(labels)


@dataclass(frozen=True)
class ImageFiles:
    """Image files and their labels under one folder: the index of a streamed folder split.

    Attributes:
        root: the folder the paths are relative to.
        paths: fixed-width bytes, one relative path per image.
        targets: int64 labels.
    """

    root: str
    paths: np.ndarray
    targets: np.ndarray
    random_access = True

    def __len__(self) -> int:
        return len(self.targets)

    def path(self, index: int) -> str:
        return str(Path(self.root) / self.paths[index].decode())

    def labels(self) -> Tensor:
        """Every label, without opening an image."""
        return torch.from_numpy(self.targets)

    def subset(self, indices: Tensor | np.ndarray) -> ImageFiles:
        idx = np.asarray(indices, dtype=np.int64)
        return ImageFiles(self.root, self.paths[idx], self.targets[idx])

    def hold_out(self, fraction: float, seed: int) -> tuple[ImageFiles, ImageFiles]:
        """(kept, held out): ``fraction`` of every class held out, drawn as the in-memory data module draws it."""
        kept, held = stratified_split(self.labels(), fraction, seed)
        return self.subset(kept), self.subset(held)

    def dataset(self, transform: Callable[[Any], Tensor], shuffle: bool = False, seed: int = 0) -> FolderDataset:
        """A map-style dataset (the DataLoader's sampler shuffles it, so ``shuffle`` and ``seed`` are not needed here)."""
        return FolderDataset(self, transform)

    def read(self, indices: Tensor, transform: Callable[[Any], Tensor]) -> tuple[list[Tensor], Tensor]:
        images = [transform(decode(self.path(i), self.path(i))) for i in indices.tolist()]
        return images, self.labels()[indices]


class FolderDataset(Dataset[tuple[Tensor, int]]):
    """Decodes and transforms one image per item, in whichever process asks for it (a DataLoader worker)."""

    def __init__(self, files: ImageFiles, transform: Callable[[Any], Tensor]) -> None:
        self.files = files
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path = self.files.path(index)
        return self.transform(decode(path, path)), int(self.files.targets[index])


@dataclass
class StreamedSplits:
    """What a streamed loader returns: a train and a test source and how to normalise them.

    Attributes:
        name: the registry name of the dataset.
        train: the training images (the data module holds out its validation part).
        test: the held-out test images.
        num_classes: classifier outputs.
        mean: per-channel normalisation mean, 0..1 scale.
        std: per-channel normalisation std.
        classes: class names in label order, when known.
    """

    name: str
    train: Source
    test: Source
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str] | None = None


def load_folder(root: str | Path | None = None) -> StreamedSplits:
    """``root/train/<class>/*`` and ``root/test/<class>/*`` (or ``root/val``), indexed now and read lazily.

    Classes are the train subfolders, sorted; the test set may lack some of them, not add any.
    """
    train_dir, test_dir = check_root(root, "folder")
    classes = find_classes(train_dir)
    extra = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and p.name not in classes)
    if extra:
        raise DasError(f"{test_dir} has class folders {extra} that train/ lacks; every test class needs training images")
    train = ImageFiles(str(train_dir), *index_folder(train_dir, classes, allow_empty=False))
    test = ImageFiles(str(test_dir), *index_folder(test_dir, classes, allow_empty=True))
    return StreamedSplits("folder", train, test, len(classes), IMAGENET_MEAN, IMAGENET_STD, classes)


def hold_in_memory(source: Source, indices: Tensor, transform: Callable[[Any], Tensor], shape: tuple[int, int, int], what: str) -> ImageSplit:
    """The images ``indices`` of ``source``, decoded through ``transform`` (to ``uint8`` of ``shape``) and stacked.

    Refuses more than :data:`IN_MEMORY_BYTES`, naming ``what`` asked for them.
    """
    need = len(indices) * int(np.prod(shape))
    if need > IN_MEMORY_BYTES:
        raise DasError(f"holding {len(indices)} images of {what} ({'×'.join(map(str, shape))}) takes {need / 1e9:.2f} GB of memory, over "
                       f"the {IN_MEMORY_BYTES / 1e9:.2f} GB a streamed dataset may hold (das.data.streamed.IN_MEMORY_BYTES); use fewer "
                       f"images (calibrate.train_images, a smaller val_fraction) or a smaller image_size")
    images, labels = source.read(indices, transform)
    stacked = torch.stack(images) if images else torch.empty((0, *shape), dtype=torch.uint8)
    return ImageSplit(stacked, labels.to(torch.int64))
