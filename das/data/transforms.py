"""Augmentation and normalisation, built from config names (torchvision.transforms.v2).

Training transforms augment the ``uint8`` image first (crops pad with black, as in the CIFAR
ResNet recipe of He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §4.2),
then scale to 0..1 and normalise. Evaluation transforms never augment: validation, test and the
probe batches that zero-cost proxies score must be the same images every time.

Streamed datasets decode each image in a DataLoader worker and bring it to size there, by one of
three recipes (the data config's ``transform``), chosen by :func:`image_pipeline`:

- ``cifar``: resize to the square size (as the in-memory loaders do, with the same function),
  then the crop/flip above. The recipe for small images.
- ``imagenet``: training takes a random resized crop (Szegedy et al., "Going Deeper with
  Convolutions", CVPR 2015: 8–100% of the area, aspect 3/4–4/3) and a flip; evaluation resizes
  the short side to size / 0.875 and takes the centre crop (torchvision's reference recipe).
- ``timm:MODEL``: timm's own ``create_transform`` with the model's pretrained data config
  (``resolve_data_config``): its input size, interpolation, crop fraction, mean and std, so a
  pretrained timm teacher sees images prepared as it was trained and evaluated.

``auto`` is ``imagenet`` above :data:`SMALL_IMAGE_MAX` pixels and ``cifar`` at or below it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from das.data.splits import resize_images
from das.errors import DasError, close_names_hint

# The ImageNet statistics: the public CIFAR-10 teacher checkpoints in shared/ were trained with
# them, so CIFAR-like data must be normalised the same way for those teachers to see what they learnt.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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


#: Largest side for which ``transform: auto`` keeps the CIFAR recipe. At 32 px a random resized crop
#: can keep 8% of the area, a 9-pixel patch; at 224 px a 28-pixel pad-and-crop shift barely moves
#: the content. 64 px (Tiny-ImageNet, downsampled ImageNet) is where the two customs meet.
SMALL_IMAGE_MAX = 64

#: Evaluation keeps the central 87.5% of the resized image (224 of 256), torchvision's and timm's default.
EVAL_CROP = 0.875

#: The recipes a streamed dataset accepts in ``transform``; ``timm:MODEL`` names a timm model.
RECIPES = ("auto", "cifar", "imagenet")
TIMM_PREFIX = "timm:"


def check_recipe(name: str, streamed: bool) -> str:
    """Validate a ``transform`` value; in-memory datasets take ``auto`` and ``cifar`` only (both: the CIFAR recipe)."""
    if not isinstance(name, str) or not (name in RECIPES or (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX))):
        raise DasError(f"transform={name!r} must be one of {', '.join(RECIPES)} or timm:MODEL (a timm model name)")
    if not streamed and name not in ("auto", "cifar"):
        raise DasError(f"transform={name!r} needs a streamed dataset (folder or webdataset), which decodes each image at "
                       f"its stored size; an in-memory dataset is resized once at load and takes transform=auto (the cifar recipe)")
    return name


def timm_data_config(name: str, image_size: int | None = None) -> dict[str, Any]:
    """timm's data config (input size, interpolation, crop, mean, std) of model ``name``, from its pretrained config.

    Reads the config only: no weights are downloaded and no network is built. ``image_size``
    replaces the model's input size when given.
    """
    import timm
    from timm.data import resolve_data_config

    cfg = timm.models.get_pretrained_cfg(name) if timm.is_model(name.split(".")[0]) else None
    if cfg is None:
        raise DasError(f"transform=timm:{name}: no timm model {name!r}; {close_names_hint(name, timm.list_models(pretrained=True), 'timm.list_models(pretrained=True)')}")
    config = resolve_data_config(pretrained_cfg=cfg.to_dict())
    if image_size is not None:
        config["input_size"] = (3, image_size, image_size)
    return config


class SquareResize:
    """``uint8`` C×H×W → size×size, by :func:`das.data.splits.resize_images` (so streamed and in-memory pixels agree)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return resize_images(image[None], self.size)[0]


def resolve_recipe(name: str, size: int) -> str:
    """``auto`` → ``cifar`` or ``imagenet`` by the image side; other names as they are."""
    if name == "auto":
        return "imagenet" if size > SMALL_IMAGE_MAX else "cifar"
    return name


def image_pipeline(recipe: str, size: int, train: bool, augment: Iterable[str] = (),
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> v2.Compose:
    """A decoded PIL image → C×H×W at ``size``: augmented when ``train``, normalised when ``mean`` is given.

    Without ``mean`` and ``std`` the result stays ``uint8`` (the form in-memory splits hold).

    Args:
        recipe: ``auto``, ``cifar``, ``imagenet`` or ``timm:MODEL`` (see the module docstring).
        size: the side of the square images the models see.
        train: the training form (random crops, flips) rather than the evaluation form.
        augment: for cifar, the augmentations by name; for imagenet, ``crop`` is the random
            resized crop (else resize + centre crop) and ``flip`` the flip; for timm, any
            augmentation selects timm's training transform and none its evaluation transform.
        mean: per-channel normalisation mean; None leaves ``uint8``.
        std: per-channel normalisation std.
    """
    names = check_augment(augment) if train else ()
    recipe = resolve_recipe(recipe, size)
    if recipe.startswith(TIMM_PREFIX):
        from timm.data import create_transform

        config = timm_data_config(recipe[len(TIMM_PREFIX):], size)
        # use_prefetcher: timm stops at a uint8 tensor and leaves normalisation to the caller (below)
        steps: list[Callable] = [create_transform(**config, is_training=bool(names), use_prefetcher=True)]
    elif recipe == "imagenet":
        if "crop" in names:
            steps = [v2.RandomResizedCrop(size, antialias=True)]
        else:
            steps = [v2.Resize(round(size / EVAL_CROP), antialias=True), v2.CenterCrop(size)]
        steps += [v2.RandomHorizontalFlip()] if "flip" in names else []
        steps += [v2.PILToTensor()]
    else:
        steps = [v2.PILToTensor(), SquareResize(size), *(AUGMENTATIONS[n](size) for n in names)]
    if mean is not None and std is not None:
        steps.append(eval_transform(mean, std))
    return v2.Compose(steps)
