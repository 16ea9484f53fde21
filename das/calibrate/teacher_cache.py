"""The frozen teacher's outputs on a fixed training set, computed once and shared by every student.

Distilling a population of students live runs the teacher once per image, per epoch, per
student; for a ResNet-56 teacher and a ResNet-20 student that forward costs about as much as the
student's own forward and backward. The teacher is frozen (eval mode, no gradient), so on a fixed
image its outputs never change: :func:`build_teacher_cache` runs it once over every training
view and keeps its logits and the feature maps the recipe's feature losses read, and each
student then trains on batches of (view, label, teacher logits, teacher maps) drawn by index.

Augmentation is either off (one view per image: the images as loaded) or ``views`` fixed
augmented views per image, drawn once with a seed through the data module's own augmentations
and each cached; an epoch then shows every image once, in one of its views chosen by the
seeded batch order. Memory is the views (``uint8``) plus the teacher's outputs (``float32`` by
default; ``float16`` halves the maps to within ~1e-3 relative): ResNet-56's final 64×8×8 map
is 10,000 × 4,096 × 4 B = 164 MB per 10k images per view (82 MB in float16); caching every
stage map (``feature_pairs="stages"``: 16×32×32 + 32×16×16 + 64×8×8) is 1.15 GB per 10k.

A cache whose views (when augmented: unaugmented views are the images already in memory),
logits and maps come to more than :data:`MEMORY_BYTES` (2 GiB) is written to files and memory-mapped instead
(``torch.from_file``), in ``spill_dir``: the operating system keeps the pages it has room for
and reads the others back from disk, so 50k CIFAR images with every stage map (5.8 GB) or 224 px
teacher maps fit a machine with less memory than that. The size is computed before the teacher
runs (one forward of two images gives every map's shape), the space is reserved on disk up
front (a full disk is one error then, not a crash part-way), and the files are unlinked as soon
as they are mapped, so nothing is left behind, even by a killed run. Put ``spill_dir`` on a disk,
not on a RAM-backed tmpfs (often ``/tmp``), or the spill saves nothing. 2 GiB: the populations
das measures (5,000 16×16 images with three stage maps: 1.47 GB) stay in memory, where a batch
is a plain index, while a cache that would take a quarter of an 8 GB machine's memory spills.
A memory-mapped cache gives the same batches, to the bit, as one in memory.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.transforms import v2

from das.calibrate.data import PopulationData
from das.data.transforms import AUGMENTATIONS, check_augment, eval_transform
from das.errors import DasError
from das.features import FeaturePoint, FeatureTap, feature_points, final_point, map_points, validate_module_names

#: The storage types of cached feature maps; logits are always float32 (they are small).
MAP_DTYPES = {"float32": torch.float32, "float16": torch.float16}

#: Largest cache (views, logits and maps) held in memory; a larger one is memory-mapped from files (module docstring).
MEMORY_BYTES = 2 * 2**30


def cached_modules(feature_pairs: str | Sequence[Sequence[str]], teacher_points: Sequence[FeaturePoint]) -> list[str]:
    """The teacher modules whose maps a student's feature pairs can read, whatever the student.

    ``final`` reads the teacher's final map; ``stages`` may pair a student map with any teacher
    map point (the nearest reduction), so all of them are cached; a list of
    ``[student, teacher]`` names reads the teacher names it gives.
    """
    if feature_pairs == "final":
        return [final_point(teacher_points).module]
    if feature_pairs == "stages":
        return [p.module for p in map_points(teacher_points)]
    if isinstance(feature_pairs, str) or not all(not isinstance(p, str) and len(p) == 2 for p in feature_pairs):
        raise DasError(f"feature_pairs={feature_pairs!r} must be 'final', 'stages' or a list of [student_module, teacher_module] pairs")
    return list(dict.fromkeys(str(t) for _, t in feature_pairs))


def teacher_outputs(teacher: nn.Module, x: torch.Tensor, modules: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One live forward of the frozen teacher: its logits and the outputs of ``modules``.

    The teacher must already be in eval mode (as DistillModule keeps it); no gradient is recorded.
    """
    with torch.inference_mode(), FeatureTap(teacher, list(modules)) as tap:
        logits = teacher(x)
    return logits, {m: tap.outputs[m] for m in modules}


def augmented_views(images: torch.Tensor, augment: Sequence[str], views: int, seed: int) -> torch.Tensor:
    """``views`` augmented copies of each ``uint8`` image (K×N×C×H×W), drawn from ``seed`` alone.

    The augmentations are the data module's (:data:`das.data.transforms.AUGMENTATIONS`), applied
    per image so every image gets its own crop and flip; the global generator is restored after.
    Without augmentations the one view is the images themselves.
    """
    if not _check_views(augment, views):
        return images[None]
    return _fill_views(images, augment, seed, torch.empty((views, *images.shape), dtype=images.dtype))


def _check_views(augment: Sequence[str], views: int) -> tuple[str, ...]:
    names = check_augment(augment)
    if views < 1 or (not names and views != 1):
        raise DasError(f"views={views} must be 1 without augmentation and >= 1 with it (each view is a fixed augmented copy of every image)")
    return names


def _fill_views(images: torch.Tensor, augment: Sequence[str], seed: int, out: torch.Tensor) -> torch.Tensor:
    """:func:`augmented_views` written into ``out`` (K×N×C×H×W, in memory or mapped), one image at a time."""
    names, views = check_augment(augment), out.shape[0]
    transform = v2.Compose([AUGMENTATIONS[n](images.shape[-1]) for n in names])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for k in range(views):  # view-major, image-minor: the order the draws are taken in
            for i, image in enumerate(images):
                out[k, i] = transform(image)
    return out


@dataclass(frozen=True)
class CachedBatch:
    """A training batch with the teacher's outputs on exactly these views.

    Attributes:
        images: normalised float32 B×C×H×W.
        labels: int64 B.
        teacher_logits: float32 B×K.
        teacher_maps: teacher module name → float32 map, B×C×H×W.
    """

    images: torch.Tensor
    labels: torch.Tensor
    teacher_logits: torch.Tensor
    teacher_maps: dict[str, torch.Tensor]


class TeacherCache:
    """The training views, their labels and the teacher's outputs on them, in memory (CPU).

    Args:
        views: ``uint8`` K×N×C×H×W: K views of each of N images.
        labels: int64 N.
        logits: float32 K×N×classes.
        maps: module name → K×N×C×H×W maps (float32 or float16).
        mean: the normalisation mean applied to a batch's views.
        std: the normalisation std.
        teacher_points: the teacher's feature points, which students pair their maps with.
        spilled: the folder whose (unlinked) files the tensors are mapped from; None in memory.
    """

    def __init__(self, views: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor, maps: dict[str, torch.Tensor],
                 mean: Sequence[float], std: Sequence[float], teacher_points: Sequence[FeaturePoint],
                 spilled: Path | None = None) -> None:
        self.views, self.labels, self.logits, self.maps = views, labels, logits, maps
        self.teacher_points = list(teacher_points)
        self.mean, self.std = tuple(mean), tuple(std)
        self.normalise = eval_transform(self.mean, self.std)
        self.spilled = spilled

    @property
    def where(self) -> str:
        """``in memory``, or where the memory-mapped files were made."""
        return f"memory-mapped from files in {self.spilled}" if self.spilled else "in memory"

    def __len__(self) -> int:
        return self.views.shape[1]

    @property
    def num_views(self) -> int:
        return self.views.shape[0]

    @property
    def modules(self) -> list[str]:
        return list(self.maps)

    @property
    def nbytes(self) -> int:
        """Bytes held: views, logits and maps."""
        tensors = [self.views, self.labels, self.logits, *self.maps.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def batch(self, index: torch.Tensor, view: torch.Tensor) -> CachedBatch:
        """The images ``index`` seen in views ``view`` (one view number per image)."""
        return CachedBatch(
            images=self.normalise(self.views[view, index]),
            labels=self.labels[index],
            teacher_logits=self.logits[view, index],
            teacher_maps={m: t[view, index].float() for m, t in self.maps.items()},
        )

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches per epoch: the last partial batch is dropped (as the data module does) unless it is the only one."""
        n = len(self)
        return n // batch_size if n > batch_size else 1

    def epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[CachedBatch]:
        """One epoch of batches in the order ``generator`` draws: a permutation, and a view per image."""
        n = len(self)
        order = torch.randperm(n, generator=generator)
        view = torch.randint(self.num_views, (n,), generator=generator) if self.num_views > 1 else torch.zeros(n, dtype=torch.int64)
        size = min(batch_size, n)
        for step in range(self.steps_per_epoch(batch_size)):
            index = order[step * size:(step + 1) * size]
            yield self.batch(index, view[index])


def build_teacher_cache(
    teacher: nn.Module,
    data: PopulationData,
    modules: Sequence[str],
    augment: Sequence[str] = (),
    views: int = 1,
    seed: int = 0,
    map_dtype: str = "float32",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    memory_bytes: int = MEMORY_BYTES,
    spill_dir: str | Path | None = None,
) -> TeacherCache:
    """Run the frozen teacher once over every training view and keep what the losses read.

    Args:
        teacher: the teacher; put in eval mode and frozen here (its mode is restored after).
        data: the training images (``data.train``) and their normalisation.
        modules: the teacher modules whose maps to keep (see :func:`cached_modules`); [] for
            logits only.
        augment: augmentation names (``crop``, ``flip``); () caches the images as loaded.
        views: fixed augmented views per image (1 without augmentation).
        seed: the seed of the augmented views.
        map_dtype: ``float32`` or ``float16``, the storage of the maps.
        batch_size: images per teacher forward.
        device: where the teacher runs; the cache is kept on the CPU.
        memory_bytes: the largest cache held in memory; a larger one is memory-mapped from
            files (:data:`MEMORY_BYTES` by default; 0 always maps).
        spill_dir: where the mapped files are made (on a disk, not a tmpfs); None: the
            system's temporary folder.
    """
    if map_dtype not in MAP_DTYPES:
        raise DasError(f"map_dtype={map_dtype!r} must be one of {', '.join(MAP_DTYPES)}")
    modules = list(dict.fromkeys(modules))  # several student stages may read one teacher map: cache it once
    validate_module_names(teacher, modules)
    images = data.train.images
    augmented = bool(_check_views(augment, views))
    points = feature_points(teacher, data.normalise(images[:2]).to(device))
    was_training = teacher.training
    teacher.eval()
    try:
        k, n = views, len(images)
        out, tapped = teacher_outputs(teacher, data.normalise(images[:2]).to(device), modules)  # the shapes to allocate
        # Without augmentation the one view is the images themselves, already in memory: nothing to allocate.
        shapes = {**({"views": ((k, *images.shape), images.dtype)} if augmented else {}), "logits": ((k, n, *out.shape[1:]), torch.float32),
                  **{f"map.{m}": ((k, n, *tapped[m].shape[1:]), MAP_DTYPES[map_dtype]) for m in modules}}
        spill = _spill_folder(shapes, memory_bytes, spill_dir)
        tensors = _allocate(shapes, spill)
        stack = _fill_views(images, augment, seed, tensors["views"]) if augmented else images[None]
        flat_logits = tensors["logits"].flatten(0, 1)
        flat_maps = {m: tensors[f"map.{m}"].flatten(0, 1) for m in modules}
        start = 0
        for chunk in stack.flatten(0, 1).split(batch_size):
            out, tapped = teacher_outputs(teacher, data.normalise(chunk).to(device), modules)
            flat_logits[start:start + len(chunk)] = out.float().cpu()
            for m in modules:
                flat_maps[m][start:start + len(chunk)] = tapped[m].to("cpu", MAP_DTYPES[map_dtype])
            start += len(chunk)
    finally:
        teacher.train(was_training)
    maps = {m: tensors[f"map.{m}"] for m in modules}
    return TeacherCache(stack, data.train.labels, tensors["logits"], maps, data.mean, data.std, points, spill)


def _spill_folder(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]], memory_bytes: int, spill_dir: str | Path | None) -> Path | None:
    """None when the cache fits ``memory_bytes``; else the folder its files go in (checked for room)."""
    if isinstance(memory_bytes, bool) or not isinstance(memory_bytes, int) or memory_bytes < 0:
        raise DasError(f"memory_bytes={memory_bytes!r} must be a non-negative integer (the largest teacher cache held in memory)")
    need = sum(math.prod(shape) * dtype.itemsize for shape, dtype in shapes.values())
    if need <= memory_bytes:
        return None
    folder = Path(spill_dir if spill_dir is not None else tempfile.gettempdir()).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
    except OSError as err:
        raise DasError(f"the teacher cache ({need / 1e9:.2f} GB, over {memory_bytes / 1e9:.2f} GB in memory) must go to files, "
                       f"but {folder} is not a usable folder ({err}); pass another spill_dir") from None
    if free < need:
        raise DasError(f"the teacher cache needs {need / 1e9:.2f} GB of files in {folder}, which has {free / 1e9:.2f} GB free; "
                       f"free some, pass another spill_dir, or cache fewer images or maps (train_images, map_dtype=float16)")
    return folder


def _allocate(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]], spill: Path | None) -> dict[str, torch.Tensor]:
    """Empty tensors of ``shapes``: in memory, or each mapped from its own file in ``spill`` (unlinked once mapped)."""
    if spill is None:
        return {name: torch.empty(shape, dtype=dtype) for name, (shape, dtype) in shapes.items()}
    tensors = {}
    folder = Path(tempfile.mkdtemp(prefix="das-teacher-cache-", dir=spill))
    try:
        for name, (shape, dtype) in shapes.items():
            numel = math.prod(shape)
            if not numel:
                tensors[name] = torch.empty(shape, dtype=dtype)
                continue
            path = folder / f"{name}.bin"
            with open(path, "wb") as f:
                _reserve(f.fileno(), numel * dtype.itemsize, path)
            tensors[name] = torch.from_file(str(path), shared=True, size=numel, dtype=dtype).view(shape)
    finally:
        # The mappings keep the data; the names go now, so no run, however it ends, leaves files behind.
        shutil.rmtree(folder, ignore_errors=True)
    return tensors


def _reserve(fd: int, size: int, path: Path) -> None:
    """Give the file its size with its disk blocks allocated, so a full disk fails here rather than on a later write to the mapping."""
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)
        else:
            os.ftruncate(fd, size)
    except OSError as err:
        raise DasError(f"cannot reserve {size / 1e9:.2f} GB for the teacher cache at {path} ({err}); free disk space or pass another spill_dir") from None
