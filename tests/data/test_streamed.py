"""Streamed data: a lazy folder sees the eager loader's pixels, decodes in workers, holds no pixels; recipes; bad folders."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import get_worker_info

from das.calibrate import PopulationData
from das.data import DasDataModule, load_dataset, probe_batches
from das.data.streamed import IN_MEMORY_BYTES, FolderDataset
from das.data.transforms import EVAL_CROP, image_pipeline
from das.errors import DasError

CLASSES = {"ant": 5, "bee": 4, "cat": 3}


def write_folder(root: Path, split: str, classes: dict[str, int], size: tuple[int, int] = (10, 10), fmt: str = "png", seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name, count in classes.items():
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / split / name / f"{i}.{fmt}")


@pytest.fixture
def folder(tmp_path) -> Path:
    write_folder(tmp_path, "train", CLASSES)
    write_folder(tmp_path, "test", {"ant": 2, "cat": 2}, seed=1)
    return tmp_path


def module(root: Path, dataset: str = "folder", **kw) -> DasDataModule:
    return DasDataModule(**{"dataset": dataset, "root": str(root), "image_size": 8, "batch_size": 4, "augment": [], "val_fraction": 0.25, **kw})


@pytest.mark.parametrize("image_size", [10, 8])  # the stored size, and resized (by the eager loader's own function)
def test_a_lazy_folder_gives_the_eager_loader_s_pixels(folder, image_size) -> None:
    eager = load_dataset("imagefolder", root=folder, image_size=image_size)
    lazy = module(folder, image_size=image_size)
    assert lazy.recipe == "cifar" and lazy.num_classes == eager.num_classes == 3 and lazy.splits.classes == eager.classes
    held = lazy.subset("test")
    assert torch.equal(held.images, eager.test.images) and torch.equal(held.labels, eager.test.labels)
    # The validation split is the same draw as the in-memory module's, so the loaders give the same batches.
    in_memory = module(folder, dataset="imagefolder", image_size=image_size)
    batches = 0
    for (xa, ya), (xb, yb) in zip(lazy.val_dataloader(), in_memory.val_dataloader(), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        batches += 1
    assert batches == 1 and torch.equal(lazy.subset("train").images, in_memory.subset("train").images)


def test_search_inputs_from_a_lazy_folder_equal_the_eager_ones(folder) -> None:
    lazy, eager = module(folder), module(folder, dataset="imagefolder")
    for (xa, ya), (xb, yb) in zip(probe_batches(lazy, batch_size=2, num_batches=2, seed=3), probe_batches(eager, batch_size=2, num_batches=2, seed=3)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    a, b = PopulationData.from_datamodule(lazy, train_images=4, seed=1), PopulationData.from_datamodule(eager, train_images=4, seed=1)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.images, b.test.images) and a.digest() == b.digest()


class WorkerId:
    """A transform that records which DataLoader worker ran it (-1: the main process)."""

    def __call__(self, image) -> torch.Tensor:
        info = get_worker_info()
        return torch.tensor([-1 if info is None else info.id])


def test_workers_decode_and_the_dataset_holds_paths_not_pixels(folder) -> None:
    dm = module(folder, num_workers=1)
    loader = dm.train_dataloader()
    assert loader.num_workers == 1 and loader.persistent_workers
    dataset = loader.dataset
    assert isinstance(dataset, FolderDataset)
    # What the workers are sent: the index (paths and labels), a few dozen bytes an image, no pixels.
    assert len(pickle.dumps(dataset)) < 2000 + 100 * len(dataset)
    assert not any(isinstance(v, torch.Tensor) for v in vars(dataset.files).values())
    dataset.transform = WorkerId()
    ids = torch.cat([x.flatten() for x, _ in loader])
    assert ids.tolist() == [0] * len(ids)  # every image was opened and transformed in worker 0, none in this process


def test_training_batches_are_augmented_per_epoch_and_evaluation_is_fixed(tmp_path) -> None:
    write_folder(tmp_path, "train", {"a": 4, "b": 4}, size=(96, 120), fmt="jpg")
    write_folder(tmp_path, "val", {"a": 2, "b": 2}, size=(96, 120), fmt="jpg")  # val/ stands in for test/
    dm = module(tmp_path, image_size=80, augment=["crop", "flip"], val_fraction=0.0, batch_size=8)
    assert dm.recipe == "imagenet" and dm.input_shape == (3, 80, 80)  # auto: above 64 px
    train = dm.train_dataloader()
    first, second = next(iter(train))[0], next(iter(train))[0]
    assert first.shape == (8, 3, 80, 80) and first.dtype == torch.float32 and not torch.equal(first, second)
    test = dm.test_dataloader()
    assert torch.equal(next(iter(test))[0], next(iter(test))[0])


def test_the_imagenet_evaluation_crop_is_resize_then_centre(tmp_path) -> None:
    image = Image.fromarray(np.arange(100 * 200 * 3, dtype=np.uint32).reshape(100, 200, 3).astype(np.uint8))
    out = image_pipeline("imagenet", 70, train=False)(image)
    assert out.dtype == torch.uint8 and out.shape == (3, 70, 70)
    short = round(70 / EVAL_CROP)  # 80: the short side, the long one in proportion (160), then the central 70×70
    resized = np.asarray(image.resize((2 * short, short), Image.BILINEAR))
    top, left = (short - 70) // 2, (2 * short - 70) // 2
    expected = torch.from_numpy(resized[top:top + 70, left:left + 70].copy()).permute(2, 0, 1)
    assert (out.int() - expected.int()).abs().max() <= 2  # PIL's and torchvision's antialiasing round apart


def test_a_timm_model_s_data_config_sets_size_normalisation_and_transform(folder) -> None:
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg

    dm = module(folder, image_size=None, transform="timm:resnet18.a1_in1k")
    config = resolve_data_config(pretrained_cfg=get_pretrained_cfg("resnet18.a1_in1k").to_dict())
    assert dm.input_shape == config["input_size"] and dm.mean == config["mean"] and dm.std == config["std"]
    path = dm.splits.test.path(0)
    x, _ = next(iter(dm.test_dataloader()))
    with Image.open(path) as img:
        expected = create_transform(**config, is_training=False)(img.convert("RGB"))
    torch.testing.assert_close(x[0], expected, rtol=0, atol=1e-5)
    assert module(folder, image_size=64, transform="timm:resnet18.a1_in1k").input_shape == (3, 64, 64)  # a size given wins


def test_shards_and_folders_hold_at_most_the_stated_bytes_in_memory(folder, monkeypatch) -> None:
    dm = module(folder)
    monkeypatch.setattr("das.data.streamed.IN_MEMORY_BYTES", 3 * 8 * 8 * 2)
    assert len(dm.subset("train", torch.tensor([0, 1]))) == 2
    with pytest.raises(DasError, match=r"holding 4 images of the test split of dataset=folder \(3×8×8\) .*IN_MEMORY_BYTES"):
        dm.subset("test")
    assert IN_MEMORY_BYTES == 2 * 2**30


# bad input: one line each ---------------------------------------------------------------------


def test_a_folder_with_one_class_is_refused(tmp_path) -> None:
    write_folder(tmp_path, "train", {"ant": 3})
    write_folder(tmp_path, "test", {"ant": 1})
    with pytest.raises(DasError, match=r"1 class folder\(s\) \['ant'\]; a classifier needs at least 2 classes"):
        module(tmp_path).setup()


@pytest.mark.parametrize("layout", ["no_images", "an_empty_class"])
def test_a_folder_without_images_is_refused(tmp_path, layout) -> None:
    for name in ("ant", "bee"):
        (tmp_path / "train" / name).mkdir(parents=True)
    (tmp_path / "test").mkdir()
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    if layout == "an_empty_class":
        write_folder(tmp_path, "train", {"ant": 2})
    with pytest.raises(DasError, match="no images in") as err:
        module(tmp_path).setup()
    assert ("['bee']" in str(err.value)) == (layout == "an_empty_class")


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_jpeg_stops_the_epoch_naming_the_file(folder, workers) -> None:
    bad = folder / "train" / "bee" / "2.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    dm = module(folder, num_workers=workers, val_fraction=0.0)
    with pytest.raises(DasError) as err:
        list(dm.train_dataloader())
    message = str(err.value)
    assert message.startswith(f"cannot decode image {bad}") and "\n" not in message and "Traceback" not in message


def test_streamed_settings_are_checked_before_anything_is_read(tmp_path) -> None:
    with pytest.raises(DasError, match="needs image_size"):
        DasDataModule(dataset="folder", root=str(tmp_path))
    with pytest.raises(DasError, match="transform='imagenet' needs a streamed dataset"):
        DasDataModule(dataset="digits", transform="imagenet")
    with pytest.raises(DasError, match="must be one of auto, cifar, imagenet or timm:MODEL"):
        DasDataModule(dataset="folder", root=str(tmp_path), image_size=8, transform="imagnet")
    with pytest.raises(DasError, match="is streamed"):
        load_dataset("folder", root=tmp_path)


def test_an_unknown_timm_model_names_close_ones(folder) -> None:
    with pytest.raises(DasError, match=r"no timm model 'resnet1B'; did you mean"):
        module(folder, image_size=None, transform="timm:resnet1B").setup()
