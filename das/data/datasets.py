"""The dataset registry: loaders that turn a name (and a local path) into in-memory train/test splits.

Every loader returns a :class:`DatasetSplits` with ``uint8`` RGB images; :func:`load_dataset`
then resizes them once, applies the user's normalisation and class-count overrides, and checks
that train and test agree. A loader declares the options it takes as keyword arguments, so an
option given to a dataset that does not use it (``train_file`` for ``digits``) is an error, not
silently ignored. Register your own with ``@DATASETS.register("name", mean=..., std=...)``.

- ``digits``: scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes), the
  offline default: real data that needs no download.
- ``cifar10``/``cifar100``: torchvision's CIFAR (Krizhevsky 2009) from a local ``root``.
- ``npz``: ``x`` uint8 N×H×W×C and ``y`` labels in ``.npz`` files (the form of ``shared/data``).
- ``imagefolder``: ``root/train/<class>/*.png`` and ``root/test`` (or ``root/val``), read eagerly.

Two more are streamed (registered with ``streamed=True``): their loaders return a
:class:`~das.data.streamed.StreamedSplits` of file indexes, which only the data module reads,
image by image in its DataLoader workers, so they take any number of images at any size:

- ``folder``: the ``imagefolder`` layout read lazily (:mod:`das.data.streamed`).
- ``webdataset``: tar shards listed in an ``_info.json`` (:mod:`das.data.shards`).
"""

from __future__ import annotations

import contextlib
import inspect
import socket
import urllib.error
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from das.data.splits import DatasetSplits, ImageSplit, resize_images, stratified_split
from das.data.shards import load_webdataset
from das.data.streamed import load_folder
from das.data.transforms import IMAGENET_MEAN, IMAGENET_STD, check_norm
from das.errors import DasError
from das.registry import Registry

Loader = Callable[..., DatasetSplits]

DATASETS: Registry[Loader] = Registry("dataset")

# Digits are near-binary strokes, so a symmetric 0.5/0.5 maps them to -1..1.
HALF = (0.5, 0.5, 0.5)

# The digits test set must never change with the run seed, or accuracies would not compare.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2

# Without a timeout, urllib can wait forever on a network that drops packets instead of refusing.
DOWNLOAD_TIMEOUT_S = 30.0


@DATASETS.register("digits", mean=HALF, std=HALF, image_size=16, augment=("crop",))
def load_digits() -> DatasetSplits:
    """scikit-learn's 8×8 digits as 3-channel ``uint8``, with a fixed stratified 80/20 split.

    Default ``image_size`` is 16: upsampled so that three stride-2 stages still see a 2×2 map.
    Default augmentation is crop only: a mirrored digit is another glyph.
    """
    from sklearn.datasets import load_digits as sk_load_digits  # imported here: only this loader needs it

    digits = sk_load_digits()
    values = torch.from_numpy(digits.images)  # float64 0..16
    gray = (values * (255.0 / 16.0)).round().clamp(0, 255).to(torch.uint8)
    images = gray[:, None].expand(-1, 3, -1, -1).contiguous()  # RGB, like every other dataset
    labels = torch.from_numpy(digits.target).to(torch.int64)
    train_idx, test_idx = stratified_split(labels, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    everything = ImageSplit(images, labels)
    return DatasetSplits(
        name="digits",
        train=everything.subset(train_idx),
        test=everything.subset(test_idx),
        num_classes=10,
        mean=HALF,
        std=HALF,
        classes=[str(d) for d in range(10)],
    )


def _default_cifar_root() -> Path:
    return Path("data").resolve()  # torchvision's customary ./data


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _load_cifar(name: str, root: str | Path | None, download: bool) -> DatasetSplits:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    where = Path(root).expanduser().resolve() if root else _default_cifar_root()
    archive = cls.filename
    npz = "or use dataset=npz with train_file=/test_file= (x uint8 N×H×W×C, y labels)"
    how = f"put {cls.base_folder}/ (extracted from {archive}) under {where}, pass download=True when online, {npz}"
    if not download and not (where / cls.base_folder).is_dir():
        # Checked up front so the message names the folder torchvision looks for.
        raise DasError(f"{name} not found: {where / cls.base_folder} does not exist; {how}")
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            train = cls(str(where), train=True, download=download)
            test = cls(str(where), train=False, download=False)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise DasError(
            f"could not download {name} into {where} ({reason}); fetch {archive} where there is internet and "
            f"extract it under {where} (giving {cls.base_folder}/), {npz}"
        ) from None
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DasError(f"{name} under {where} is missing or corrupted ({err}); {how}") from None
    except OSError as err:  # e.g. no permission to create the folder
        raise DasError(f"cannot read or write {name} under {where} ({err}); {how}") from None

    def split(ds: Any) -> ImageSplit:
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return ImageSplit(images, torch.as_tensor(ds.targets, dtype=torch.int64))

    return DatasetSplits(name, split(train), split(test), len(train.classes), IMAGENET_MEAN, IMAGENET_STD, list(train.classes))


@DATASETS.register("cifar10", mean=IMAGENET_MEAN, std=IMAGENET_STD, augment=("crop", "flip"))
def load_cifar10(root: str | Path | None = None, download: bool = False) -> DatasetSplits:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (default root: ./data)."""
    return _load_cifar("cifar10", root, download)


@DATASETS.register("cifar100", mean=IMAGENET_MEAN, std=IMAGENET_STD, augment=("crop", "flip"))
def load_cifar100(root: str | Path | None = None, download: bool = False) -> DatasetSplits:
    """CIFAR-100 (fine labels) from ``root/cifar-100-python`` (default root: ./data)."""
    return _load_cifar("cifar100", root, download)


def _npz_files(root: str | Path | None, train_file: str | Path | None, test_file: str | Path | None) -> tuple[Path, Path]:
    """Explicit files (relative to ``root`` when given), else the one train*/test* pair in ``root``."""
    base = Path(root).expanduser() if root else None
    if (train_file is None) != (test_file is None):
        raise DasError(f"dataset=npz got only one of train_file={train_file} and test_file={test_file}; give both, or neither and a root folder holding one train*.npz and one test*.npz")
    if train_file is not None and test_file is not None:
        paths = []
        for key, file in (("train_file", train_file), ("test_file", test_file)):
            path = Path(file).expanduser()
            if base is not None and not path.is_absolute():
                path = base / path
            if not path.is_file():
                raise DasError(f"{key}={file} not found (looked at {path.resolve()}); give an existing .npz file")
            paths.append(path)
        return paths[0], paths[1]
    if base is None:
        raise DasError("dataset=npz needs root=FOLDER (holding one train*.npz and one test*.npz) or train_file= and test_file=")
    if not base.is_dir():
        raise DasError(f"npz root {base.resolve()} is not a folder; point root at a folder with one train*.npz and one test*.npz, or name the files with train_file= and test_file=")
    trains = sorted(p.name for p in base.glob("train*.npz"))
    tests = sorted(p.name for p in base.glob("test*.npz"))
    if len(trains) != 1 or len(tests) != 1:
        raise DasError(
            f"npz root {base.resolve()} holds train files {trains} and test files {tests}; "
            f"keep exactly one of each there, or choose with train_file= and test_file="
        )
    return base / trains[0], base / tests[0]


def _read_npz(path: Path) -> tuple[ImageSplit, list[str] | None]:
    """Read and validate ``x`` (uint8 N×H×W×C, C 1 or 3) and ``y`` (N integer labels ≥ 0)."""
    try:
        with np.load(path, allow_pickle=False) as data:  # no pickles: a data file must not run code
            keys = list(data.files)
            if "x" not in keys or "y" not in keys:
                raise DasError(f"{path} has keys {keys}; an npz dataset needs 'x' (uint8 N×H×W×C images) and 'y' (N integer labels)")
            x, y = data["x"], data["y"]
            classes = [str(c) for c in data["classes"]] if "classes" in keys else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DasError(f"cannot read {path} as .npz ({err}); save it with np.savez(path, x=images, y=labels)") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DasError(
            f"{path}: key 'x' is {x.dtype} with shape {x.shape}; expected uint8 N×H×W×C with C 1 or 3 "
            f"(convert 0..1 floats with (x * 255).round().astype(np.uint8))"
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # column vectors are a common, harmless variant
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or len(y) != len(x):
        raise DasError(f"{path}: key 'y' is {y.dtype} with shape {y.shape}; expected {len(x)} integer labels (shape ({len(x)},)) to match 'x'")
    if len(y) and y.min() < 0:
        raise DasError(f"{path}: key 'y' has label {int(y.min())}; labels must be class indices 0..K-1")
    images = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)  # das models and teachers take RGB
    return ImageSplit(images.contiguous(), torch.from_numpy(y.astype(np.int64))), classes


@DATASETS.register("npz", mean=IMAGENET_MEAN, std=IMAGENET_STD, augment=("crop", "flip"))
def load_npz(root: str | Path | None = None, train_file: str | Path | None = None, test_file: str | Path | None = None) -> DatasetSplits:
    """Arrays ``x`` (uint8 N×H×W×C) and ``y`` from a train and a test ``.npz``.

    Either ``root`` is a folder with exactly one ``train*.npz`` and one ``test*.npz``, or
    ``train_file`` and ``test_file`` name them (relative to ``root`` when it is given). An
    optional ``classes`` array in the train file names the classes. ``num_classes`` is the
    largest label + 1 unless given to :func:`load_dataset`.
    """
    train_path, test_path = _npz_files(root, train_file, test_file)
    train, classes = _read_npz(train_path)
    test, _ = _read_npz(test_path)
    if not len(train):
        raise DasError(f"{train_path} holds no images; a training set needs at least one")
    num_classes = int(torch.cat([train.labels, test.labels]).max()) + 1
    return DatasetSplits("npz", train, test, num_classes, IMAGENET_MEAN, IMAGENET_STD, classes)


def _read_folder(folder: Path, class_to_idx: dict[str, int], image_size: int | None, allow_empty: bool) -> ImageSplit:
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    try:
        samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=allow_empty)
    except FileNotFoundError as err:
        raise DasError(f"{folder}: {err}; put at least one image in each class folder") from None
    images, sizes = [], set()
    for path, _ in samples:
        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            raise DasError(f"cannot read image {path} ({err}); remove or replace it") from None
        image = torch.from_numpy(array.copy()).permute(2, 0, 1)
        sizes.add(tuple(image.shape[1:]))
        images.append(resize_images(image[None], image_size)[0] if image_size else image)
    if not image_size and len(sizes) > 1:
        raise DasError(f"images under {folder} have sizes {sorted(sizes)[:4]}...; set image_size to resize them all to one size")
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    stacked = torch.stack(images) if images else torch.empty((0, 3, image_size or 1, image_size or 1), dtype=torch.uint8)
    return ImageSplit(stacked, labels)


@DATASETS.register("imagefolder", mean=IMAGENET_MEAN, std=IMAGENET_STD, augment=("crop", "flip"))
def load_imagefolder(root: str | Path | None = None, image_size: int | None = None) -> DatasetSplits:
    """``root/train/<class>/*`` and ``root/test/<class>/*`` (``root/val`` when there is no test).

    Read eagerly into memory and resized to ``image_size`` at load, which suits the small sets
    das searches and distils on; ``folder`` reads the same layout lazily, for large sets. Classes are the
    train subfolders (sorted, as torchvision's ImageFolder); the test set may lack some of them.
    """
    from torchvision.datasets.folder import find_classes

    if root is None:
        raise DasError("dataset=imagefolder needs root=FOLDER with train/ and test/ (or val/) subfolders of class folders")
    base = Path(root).expanduser().resolve()
    test_dir = next((base / n for n in ("test", "val") if (base / n).is_dir()), None)
    if not (base / "train").is_dir() or test_dir is None:
        found = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else "nothing (no such folder)"
        raise DasError(f"imagefolder root {base} must hold train/ and test/ (or val/) subfolders; found {found}")
    try:
        classes, class_to_idx = find_classes(str(base / "train"))
    except FileNotFoundError as err:
        raise DasError(f"{base / 'train'}: {err}; add one subfolder per class") from None
    extra = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and p.name not in class_to_idx)
    if extra:
        raise DasError(f"{test_dir} has class folders {extra} that train/ lacks; every test class needs training images")
    train = _read_folder(base / "train", class_to_idx, image_size, allow_empty=False)
    test = _read_folder(test_dir, class_to_idx, image_size, allow_empty=True)
    return DatasetSplits("imagefolder", train, test, len(classes), IMAGENET_MEAN, IMAGENET_STD, list(classes))


# Streamed: the data module decodes them in its DataLoader workers; load_dataset refuses them.
DATASETS.add("folder", load_folder, mean=IMAGENET_MEAN, std=IMAGENET_STD, augment=("crop", "flip"), streamed=True)
DATASETS.add("webdataset", load_webdataset, mean=IMAGENET_MEAN, std=IMAGENET_STD, augment=("crop", "flip"), streamed=True)


def is_streamed(name: str) -> bool:
    """Whether dataset ``name`` is read lazily through DataLoader workers rather than loaded into memory."""
    return bool(DATASETS.meta(name).get("streamed"))


def check_image_size(image_size: int | None) -> None:
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise DasError(f"image_size={image_size!r} must be a positive integer (the side of the square images), or null for the dataset's own size")


def loader_options(name: str, **options: Any) -> dict[str, Any]:
    """The options that dataset ``name``'s loader takes; a set option it does not take is an error.

    ``None`` and ``False`` count as unset, so one config can carry e.g. ``download: false`` for
    every dataset.
    """
    loader = DATASETS.get(name)
    accepted = inspect.signature(loader).parameters
    call = {}
    for key, value in options.items():
        if key in accepted:
            call[key] = value
        elif value is not None and value is not False:
            users = [n for n in DATASETS.names() if key in inspect.signature(DATASETS.get(n)).parameters]
            if users:
                raise DasError(f"dataset={name!r} does not take {key}={value!r} (only {', '.join(users)} do); remove it or switch dataset")
            raise DasError(f"{key}={value!r} is not a dataset option; known options: {_all_options()}")
    return call


def _all_options() -> str:
    return ", ".join(sorted({p for n in DATASETS.names() for p in inspect.signature(DATASETS.get(n)).parameters}))


def load_dataset(
    name: str,
    root: str | Path | None = None,
    image_size: int | None = None,
    *,
    mean: tuple[float, ...] | list[float] | None = None,
    std: tuple[float, ...] | list[float] | None = None,
    num_classes: int | None = None,
    **kw: Any,
) -> DatasetSplits:
    """Load dataset ``name`` into memory, resized to ``image_size`` and with its normalisation.

    Args:
        name: a registered dataset (``DATASETS.names()``).
        root: where the dataset's files are (meaning depends on the dataset; unused by digits).
        image_size: side of the square images; ``None`` keeps the dataset's default
            (16 for digits, the stored size otherwise).
        mean: per-channel normalisation mean on the 0..1 scale; ``None``: the dataset's default.
        std: per-channel normalisation std; ``None``: the dataset's default.
        num_classes: classifier outputs, when more than the largest label + 1 are wanted.
        **kw: the loader's own options, e.g. ``download`` (cifar) or ``train_file``/``test_file`` (npz).
    """
    check_image_size(image_size)
    check_norm(mean, std)
    meta = DATASETS.meta(name)
    if meta.get("streamed"):
        raise DasError(f"dataset={name} is streamed (read image by image, never loaded whole); use it through DasDataModule "
                       f"(the data: section of a config), or dataset=imagefolder/npz for a set small enough to hold in memory")
    size = image_size if image_size is not None else meta.get("image_size")
    options = loader_options(name, root=root, **kw)
    if "image_size" in inspect.signature(DATASETS.get(name)).parameters:
        options["image_size"] = size
    splits = DATASETS.get(name)(**options)

    if size is not None:
        splits.train = ImageSplit(resize_images(splits.train.images, size), splits.train.labels)
        splits.test = ImageSplit(resize_images(splits.test.images, size), splits.test.labels)
    if splits.train.image_shape != splits.test.image_shape:
        raise DasError(
            f"{name}: train images are {splits.train.image_shape} (C, H, W) but test images are {splits.test.image_shape}; "
            f"set image_size to resize both to one size"
        )
    channels = splits.train.image_shape[0]
    splits.mean = tuple(float(m) for m in (mean if mean is not None else splits.mean))
    splits.std = tuple(float(s) for s in (std if std is not None else splits.std))
    check_norm(splits.mean, splits.std, channels)
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < splits.num_classes:
            raise DasError(f"num_classes={num_classes!r} but {name} has labels up to {splits.num_classes - 1}; give at least {splits.num_classes} or leave it unset")
        splits.num_classes = num_classes
    if splits.classes is not None and len(splits.classes) != splits.num_classes:
        splits.classes = None  # names that no longer line up with the outputs would mislead
    splits.name = name
    return splits
