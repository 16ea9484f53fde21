"""WebDataset tar shards: the sharded format das streams at scale, and a writer from an image folder.

A shard is a plain POSIX tar of samples, each sample the files sharing one key:
``<key>.jpg`` (or ``.jpeg``, ``.png``, ``.webp``, ...: the encoded image, never re-encoded) and
``<key>.cls`` (the class index as text). Reading a shard is one sequential read, which is what
network and spinning storage serve fastest; any tool that writes tar can make one; and the
layout is WebDataset's (Aizman et al., "High Performance I/O For Large Scale Deep Learning",
IEEE Big Data 2019), read here through the ``webdataset`` package, which also splits the shards
between DataLoader workers and between DDP ranks.

The directory's ``_info.json`` (the layout timm's WebDataset reader reads) says which shards
make each split and how many samples each holds, so lengths are known without reading a shard,
and adds the class count::

    {"num_classes": 1000, "classes": ["tench", ...],            # classes: optional names
     "splits": {"train": {"filenames": ["train-000000.tar", ...], "shard_lengths": [1000, ...]},
                "test": {...}}}                                # or "validation" / "val"

Filenames are relative to the directory (das opens local files only: never a URL or a ``pipe:``
command read from a data file). ``python -m das.data.shards FOLDER OUT`` converts an image
folder (``FOLDER/train/<class>/*``, ``FOLDER/test`` or ``val``) into such a directory, samples
shuffled across shards with a seed so that whole shards are random samples: the validation
split is whole training shards, and probe batches are the first images in shard order.

Each epoch the shard order is reshuffled (the same permutation in every worker, from the seed
and the epoch), each worker reads its share of the shards, and samples pass through a
:data:`SHUFFLE_BUFFER`-sample buffer of encoded bytes before they are decoded.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from das.data.streamed import StreamedSplits, check_root, decode, find_classes, index_folder
from das.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from das.errors import DasError

#: The file naming a directory's shards and their sample counts (timm's WebDataset reader's name).
INFO = "_info.json"
INFO_NAMES = (INFO, "info.json")
#: Sample keys that hold the encoded image (the first one present is read).
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp", "pgm", "tif", "tiff")
LABEL_KEY = "cls"
#: Split names that may hold the test images, in order of preference.
TEST_SPLITS = ("test", "validation", "val")

#: Samples each worker holds, still encoded, to shuffle within: ~100 MB per worker for ImageNet's
#: ~110 kB JPEGs, a few MB for 32 px ones. Constant, whatever the dataset's size.
SHUFFLE_BUFFER = 1000
#: Samples per shard written by :func:`write_shards`: ~110 MB shards for ImageNet JPEGs, the size
#: WebDataset suggests (100 MB–1 GB), and enough shards to share among workers on small data.
SHARD_SIZE = 1000


@dataclass(frozen=True)
class Shards:
    """Some shards of a directory and how many samples each holds: one split of a ``webdataset`` dataset.

    Attributes:
        root: the directory.
        files: shard file names relative to ``root``.
        lengths: samples per shard.
    """

    root: str
    files: tuple[str, ...]
    lengths: tuple[int, ...]
    random_access = False

    def __len__(self) -> int:
        return int(sum(self.lengths))

    def paths(self) -> list[str]:
        return [str(Path(self.root) / f) for f in self.files]

    def hold_out(self, fraction: float, seed: int) -> tuple[Shards, Shards]:
        """(kept, held out): whole shards, ``fraction`` of them rounded half up (at least one), drawn from ``seed``."""
        n = len(self.files)
        held = int(fraction * n + 0.5) if fraction > 0 else 0
        held = max(held, 1) if fraction > 0 else 0
        if fraction > 0 and held >= n:
            raise DasError(f"val_fraction={fraction} holds out whole shards, but the training split has {n} shard(s) and would keep none; "
                           f"write more, smaller shards (python -m das.data.shards ... --shard-size) or set val_fraction=0")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        keep, out = sorted(order[held:]), sorted(order[:held])
        pick = lambda idx: Shards(self.root, tuple(self.files[i] for i in idx), tuple(self.lengths[i] for i in idx))  # noqa: E731
        return pick(keep), pick(out)

    def dataset(self, transform: Callable[[Any], Tensor], shuffle: bool = False, seed: int = 0) -> ShardStream:
        return ShardStream(self, transform, shuffle, seed)

    def read(self, indices: Tensor, transform: Callable[[Any], Tensor]) -> tuple[list[Tensor], Tensor]:
        """The samples at ``indices`` in shard order (read from the first shard up to the last index needed)."""
        wanted = {int(i): k for k, i in enumerate(indices.tolist())}
        images: list[Tensor | None] = [None] * len(wanted)
        labels = torch.zeros(len(wanted), dtype=torch.int64)
        if not wanted:
            return [], labels
        last = max(wanted)
        for i, sample in enumerate(samples(self.paths(), shuffle_seed=None, split_by_node=False)):
            if i in wanted:
                image, label = decode_sample(sample, transform)
                images[wanted[i]], labels[wanted[i]] = image, label
            if i == last:
                break
        return [im for im in images if im is not None], labels


def decode_sample(sample: dict[str, Any], transform: Callable[[Any], Tensor]) -> tuple[Tensor, int]:
    """(transformed image, label) of one sample; a sample without an image or a label is a one-line error."""
    where = f"sample {sample.get('__key__')!r} of {sample.get('__url__')}"
    key = next((k for k in IMAGE_KEYS if k in sample), None)
    if key is None or LABEL_KEY not in sample:
        found = sorted(k for k in sample if not k.startswith("__"))
        raise DasError(f"{where} holds {found}; a das shard sample needs an image ({', '.join(IMAGE_KEYS)}) and {LABEL_KEY} (its class index as text)")
    try:
        label = int(sample[LABEL_KEY])
    except ValueError:
        raise DasError(f"{where}: {LABEL_KEY}={sample[LABEL_KEY][:20]!r} is not a class index; write the label as text, e.g. b'3'") from None
    return transform(decode(sample[key], f"{key} of {where}")), label


def samples(paths: Sequence[str], shuffle_seed: int | None, split_by_node: bool = True) -> Iterator[dict[str, Any]]:
    """The raw samples of ``paths`` (this worker's share of them), shuffled through the buffer when ``shuffle_seed`` is given."""
    import webdataset as wds

    stages: list[Any] = [wds.SimpleShardList(list(paths))]
    stages += [wds.split_by_node] if split_by_node else []
    stages += [wds.split_by_worker, wds.tarfile_to_samples()]
    if shuffle_seed is not None:
        stages.append(wds.shuffle(SHUFFLE_BUFFER, initial=min(100, SHUFFLE_BUFFER), seed=shuffle_seed))
    try:
        yield from wds.DataPipeline(*stages)
    except (tarfile.TarError, OSError, ValueError, UnicodeDecodeError) as err:
        shard = next((a for a in err.args if isinstance(a, str) and a.endswith(".tar")), "one of " + ", ".join(paths[:3]))
        raise DasError(f"cannot read shard {shard} ({type(err).__name__}: {' '.join(str(err.args[0] if err.args else err).split())}); "
                       f"das reads uncompressed tar shards of <key>.jpg (or png, webp, ...) + <key>.cls samples") from None


class ShardStream(IterableDataset):
    """Samples of a :class:`Shards`, decoded and transformed in the DataLoader worker that reads them.

    Its length is the split's sample count; with several workers each reads whole shards, so an
    epoch may end up to (workers − 1) batches off the length when ``drop_last`` trims each
    worker's last batch.
    """

    def __init__(self, shards: Shards, transform: Callable[[Any], Tensor], shuffle: bool, seed: int) -> None:
        self.shards, self.transform, self.shuffle, self.seed = shards, transform, shuffle, seed
        self.epoch = 0  # counted in each worker's copy; persistent workers keep theirs between epochs

    def __len__(self) -> int:
        return len(self.shards)

    def __iter__(self) -> Iterator[tuple[Tensor, int]]:
        paths, seed = self.shards.paths(), None
        if self.shuffle:
            # One shard order for every worker (each then takes its share), a new one every epoch.
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(paths)
            worker = get_worker_info()
            seed = self.seed * 1_000_003 + self.epoch * 1009 + (worker.id if worker else 0)
        self.epoch += 1
        for sample in samples(paths, seed):
            yield decode_sample(sample, self.transform)


# Reading a directory ---------------------------------------------------------------------------


def _describe(root: Path) -> str:
    names = sorted(p.name for p in root.iterdir())
    tars = [n for n in names if n.endswith(".tar")]
    if "index.json" in names and any(n.endswith(".bin") for n in names):
        return "an index.json and .bin chunks (a litdata/StreamingDataset directory?)"
    if tars:
        return f"{len(tars)} .tar file(s) but no {INFO}"
    return f"{names[:5]}{' ...' if len(names) > 5 else ''}" if names else "nothing"


def read_info(root: Path) -> dict[str, Any]:
    """The directory's ``_info.json``, or a one-line error saying what the directory holds instead."""
    how = (f"das reads WebDataset tar shards listed in {INFO} (docs/guide.md); convert an image folder with "
           f"python -m das.data.shards FOLDER OUT")
    if not root.is_dir():
        raise DasError(f"webdataset root {root} is not a folder; {how}")
    path = next((root / n for n in INFO_NAMES if (root / n).is_file()), None)
    if path is None:
        raise DasError(f"webdataset root {root} holds {_describe(root)}; {how}")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DasError(f"cannot read {path} as JSON ({' '.join(str(err).split())}); {how}") from None
    if not isinstance(info, dict) or not isinstance(info.get("splits"), dict) or "train" not in info["splits"]:
        found = sorted(info["splits"]) if isinstance(info, dict) and isinstance(info.get("splits"), dict) else "no splits"
        raise DasError(f"{path} has {found}; it needs \"splits\": {{\"train\": ..., \"test\" (or \"validation\"): ...}}, each with filenames and shard_lengths")
    return info


def split_shards(root: Path, info: dict[str, Any], name: str) -> Shards:
    """One split of ``_info.json``: its shard files (checked to exist, inside ``root``) and their sample counts."""
    entry = info["splits"][name]
    where = f"{root / INFO} split {name!r}"
    files, lengths = (entry.get("filenames"), entry.get("shard_lengths")) if isinstance(entry, dict) else (None, None)
    if not isinstance(files, list) or not isinstance(lengths, list) or len(files) != len(lengths) or not files:
        raise DasError(f"{where} needs filenames (a list of shard files) and shard_lengths (their sample counts), one per shard")
    for file, count in zip(files, lengths):
        path = (root / str(file)).resolve()
        if not isinstance(file, str) or ":" in file or root.resolve() not in path.parents or not path.is_file():
            raise DasError(f"{where}: shard {file!r} is not a file under {root}; das reads local shard files named relative to the directory")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise DasError(f"{where}: shard_lengths has {count!r} for {file}; give each shard's sample count")
    return Shards(str(root), tuple(files), tuple(lengths))


def check_first_sample(shards: Shards) -> None:
    """Open the first shard and check that its first sample is an image and a label, before any worker starts."""
    path = shards.paths()[0]
    try:
        with tarfile.open(path, "r:") as tar:
            names = []
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = Path(member.name).name.partition(".")
                if names and key != names[0][0]:
                    break
                names.append((key, ext.lower()))
    except (tarfile.TarError, OSError) as err:
        raise DasError(f"{path} is not a readable tar shard ({' '.join(str(err).split())}); das reads uncompressed WebDataset tar shards") from None
    exts = [e for _, e in names]
    if not any(e in IMAGE_KEYS for e in exts) or LABEL_KEY not in exts:
        raise DasError(f"the first sample of {path} holds {[f'{k}.{e}' for k, e in names] or 'no files'}; a das shard sample is "
                       f"<key>.jpg (or {', '.join(IMAGE_KEYS[1:])}) and <key>.{LABEL_KEY} (its class index as text)")


def load_webdataset(root: str | Path | None = None) -> StreamedSplits:
    """Train and test shards of ``root`` (see the module docstring for the layout), checked and indexed, not read."""
    if root is None:
        raise DasError(f"dataset=webdataset needs root=FOLDER holding tar shards and their {INFO}")
    base = Path(root).expanduser().resolve()
    info = read_info(base)
    test_name = next((n for n in TEST_SPLITS if n in info["splits"]), None)
    if test_name is None:
        raise DasError(f"{base / INFO} has splits {sorted(info['splits'])}; it needs a test split named one of {', '.join(TEST_SPLITS)}")
    num_classes, classes = info.get("num_classes"), info.get("classes")
    if classes is not None and (not isinstance(classes, list) or (num_classes is not None and len(classes) != num_classes)):
        raise DasError(f"{base / INFO}: classes must be a list of num_classes={num_classes} names")
    num_classes = len(classes) if num_classes is None and classes else num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise DasError(f"{base / INFO} has num_classes={num_classes!r}; add \"num_classes\": K (at least 2, the labels are 0..K-1) to it")
    train, test = split_shards(base, info, "train"), split_shards(base, info, test_name)
    if not len(train):
        raise DasError(f"{base / INFO}: the train shards hold no samples (shard_lengths sum to 0)")
    for split in (train, test):
        if len(split):
            check_first_sample(split)
    return StreamedSplits("webdataset", train, test, num_classes, IMAGENET_MEAN, IMAGENET_STD, [str(c) for c in classes] if classes else None)


# Writing a directory ---------------------------------------------------------------------------


def write_shards(folder: str | Path, out: str | Path, shard_size: int = SHARD_SIZE, seed: int = 0) -> dict[str, Any]:
    """Convert an image folder into shards and their ``_info.json`` under ``out``; returns the info.

    The folder is the ``folder`` dataset's layout (``train/<class>/*``, ``test/`` or ``val/``).
    Each split's images are shuffled with ``seed`` and written in that order, ``shard_size`` per
    shard, as their original bytes. Everything is written into a hidden sibling folder that
    becomes ``out`` only when complete, so a failed or killed conversion leaves no ``out``.
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise DasError(f"shard_size={shard_size!r} must be a positive integer (samples per shard)")
    train_dir, test_dir = check_root(folder, "folder")
    classes = find_classes(train_dir)
    target = Path(out).expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DasError(f"{target} already exists and is not an empty folder; write shards into a new folder (nothing was changed)")
    listed = {"train": (train_dir, index_folder(train_dir, classes, allow_empty=False)),
              "test": (test_dir, index_folder(test_dir, classes, allow_empty=True))}
    partial = target.parent / f".{target.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # left by a killed conversion
    partial.mkdir(parents=True)
    try:
        splits = {}
        for name, (src, (paths, labels)) in listed.items():
            order = np.random.default_rng(seed).permutation(len(labels))
            files, lengths = [], []
            for start in range(0, len(order), shard_size):
                chunk = order[start:start + shard_size]
                files.append(f"{name}-{len(files):06d}.tar")
                _write_tar(partial / files[-1], src, paths, labels, chunk, start)
                lengths.append(len(chunk))
            splits[name] = {"name": name, "filenames": files, "shard_lengths": lengths, "num_samples": int(sum(lengths))}
        info = {"name": Path(folder).name, "num_classes": len(classes), "classes": classes, "splits": splits}
        (partial / INFO).write_text(json.dumps(info, indent=1))
        if target.exists():
            target.rmdir()  # checked empty above
        os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return info


def _write_tar(path: Path, src: Path, paths: np.ndarray, labels: np.ndarray, indices: np.ndarray, start: int) -> None:
    with tarfile.open(path, "w") as tar:
        for k, i in enumerate(indices):
            file = src / paths[i].decode()
            suffix = file.suffix.lower().lstrip(".")
            key = f"{start + k:09d}"
            try:
                image = file.read_bytes()
            except OSError as err:
                raise DasError(f"cannot read {file} ({err}); nothing was written: fix or remove it and convert again") from None
            for name, data in ((f"{key}.{'jpg' if suffix == 'jpeg' else suffix}", image), (f"{key}.{LABEL_KEY}", str(int(labels[i])).encode())):
                member = tarfile.TarInfo(name)
                member.size, member.mode = len(data), 0o444
                tar.addfile(member, io.BytesIO(data))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m das.data.shards", description="Convert an image folder (train/<class>/*, test/ or val/) into WebDataset shards das streams.")
    parser.add_argument("folder", help="the image folder")
    parser.add_argument("out", help="a new or empty folder for the shards and _info.json")
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE, help=f"samples per shard (default {SHARD_SIZE})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the order samples are written in (default 0)")
    args = parser.parse_args(argv)
    info = write_shards(args.folder, args.out, args.shard_size, args.seed)
    for name, split in info["splits"].items():
        print(f"{name}: {split['num_samples']} images in {len(split['filenames'])} shard(s)")
    print(f"wrote {Path(args.out).resolve() / INFO}; use it with --data.dataset webdataset --data.root {args.out}")
    return 0


if __name__ == "__main__":
    import sys

    from das.cli import guarded

    sys.exit(guarded(main))
