"""Datasets load into fixed, disjoint splits; transforms, the data module and probe batches behave."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from das.data import DATASETS, DasDataModule, eval_transform, load_dataset, probe_batches, stratified_split, train_transform
from das.data.datasets import DIGITS_SPLIT_SEED, DIGITS_TEST_FRACTION
from das.errors import DasError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def tiny_module(**kw) -> DasDataModule:
    return DasDataModule(**{"dataset": "digits", "image_size": 8, "batch_size": 16, "augment": [], **kw})


def write_npz(path: Path, n: int, size: int = 12, classes: int = 4, **override) -> None:
    rng = np.random.default_rng(len(path.name))
    arrays = {"x": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), "y": np.arange(n) % classes, **override}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


# digits ---------------------------------------------------------------------------------------


def test_digits_shapes_counts_and_classes(digits) -> None:
    assert len(digits.train) + len(digits.test) == 1797
    assert abs(len(digits.test) - DIGITS_TEST_FRACTION * 1797) < 10
    for split in (digits.train, digits.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 16, 16)
        assert split.labels.dtype == torch.int64
        assert set(split.labels.tolist()) == set(range(10))  # stratified: every class in both
    assert digits.num_classes == 10 and digits.classes == [str(d) for d in range(10)]
    assert int(digits.train.images.max()) > 200  # 0..16 became 0..255
    assert digits.mean == (0.5, 0.5, 0.5) and digits.std == (0.5, 0.5, 0.5)


def test_digits_split_is_fixed_whatever_the_global_seed(digits) -> None:
    torch.manual_seed(1234)
    again = load_dataset("digits")
    assert torch.equal(again.test.images, digits.test.images) and torch.equal(again.test.labels, digits.test.labels)


def test_digits_split_is_disjoint_and_complete() -> None:
    from sklearn.datasets import load_digits as sk

    labels = torch.from_numpy(sk().target).long()
    train, test = stratified_split(labels, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    assert not set(train.tolist()) & set(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(len(labels)))


def test_native_size_keeps_the_original_pixels() -> None:
    from sklearn.datasets import load_digits as sk

    eight = load_dataset("digits", image_size=8)
    assert eight.image_shape == (3, 8, 8)
    expected = torch.from_numpy(np.round(sk().images * 255 / 16)).to(torch.uint8)
    train, _ = stratified_split(torch.from_numpy(sk().target).long(), DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    assert torch.equal(eight.train.images[:, 0], expected[train])


# transforms -----------------------------------------------------------------------------------


def test_eval_transform_normalises(digits) -> None:
    raw = digits.test.images.float() / 255
    x = eval_transform(digits.mean, digits.std)(digits.test.images)
    assert x.dtype == torch.float32
    assert x.mean().item() == pytest.approx((raw.mean().item() - 0.5) / 0.5, abs=1e-5)
    # With the data's own statistics, normalised channels have mean 0 and std 1.
    mean, std = raw.mean(dim=(0, 2, 3)).tolist(), raw.std(dim=(0, 2, 3)).tolist()
    z = eval_transform(mean, std)(digits.test.images)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)


def test_augmentation_is_random_and_eval_is_not(digits) -> None:
    image = digits.train.images[0]
    train = train_transform(16, digits.mean, digits.std, ["crop", "flip"])
    evaluate = eval_transform(digits.mean, digits.std)
    assert len({train(image).numpy().tobytes() for _ in range(20)}) > 1
    assert torch.equal(evaluate(image), evaluate(image))
    assert train(image).shape == evaluate(image).shape == (3, 16, 16)


@pytest.mark.parametrize("augment", [["rotate"], ["crop", "flp"]])
def test_unknown_augmentation_lists_the_accepted(augment) -> None:
    with pytest.raises(DasError, match=r"unknown augmentation .*accepted: crop, flip"):
        DasDataModule(augment=augment)


def test_augment_defaults_per_dataset() -> None:
    assert DasDataModule().augment == ("crop",)  # a mirrored digit is another glyph
    assert DasDataModule(dataset="npz", root="unused").augment == ("crop", "flip")
    assert DasDataModule(augment=[]).augment == ()


# the data module ------------------------------------------------------------------------------


def test_datamodule_loaders_yield_normalised_batches() -> None:
    dm = tiny_module(augment=["crop", "flip"], val_fraction=0.25)
    assert dm.num_classes == 10 and dm.input_shape == (3, 8, 8)  # no explicit setup()
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        x, y = next(iter(loader))
        assert x.shape == (16, 3, 8, 8) and x.dtype == torch.float32
        assert y.shape == (16,) and y.dtype == torch.int64
        assert x.min() >= -1.0 and x.max() <= 1.0
    sizes = {name: len(dm.subset(name)) for name in ("train", "val", "test")}
    assert sizes["train"] + sizes["val"] == len(dm.splits.train)
    assert abs(sizes["val"] - 0.25 * len(dm.splits.train)) < 10


def test_val_split_is_seeded_and_disjoint_from_train() -> None:
    dm = tiny_module(val_fraction=0.2, seed=3)
    keep, held = stratified_split(dm.splits.train.labels, 0.2, 3)
    assert not set(keep.tolist()) & set(held.tolist())
    assert torch.equal(dm.subset("val").images, dm.splits.train.images[held])
    assert torch.equal(dm.subset("train").images, dm.splits.train.images[keep])
    assert torch.equal(tiny_module(val_fraction=0.2, seed=3).subset("val").labels, dm.subset("val").labels)
    assert not torch.equal(tiny_module(val_fraction=0.2, seed=4).subset("val").images, dm.subset("val").images)


def test_setup_is_idempotent() -> None:
    dm = tiny_module()
    dm.setup("fit")
    first = dm.subset("train")
    dm.setup("test")
    assert dm.subset("train") is first


@pytest.mark.parametrize(
    "bad",
    [
        {"val_fraction": 1.0},
        {"val_fraction": -0.1},
        {"batch_size": 0},
        {"num_workers": -1},
        {"image_size": 0},
        {"std": [0.5, 0.0, 0.5]},
        {"train_file": "train.npz"},
    ],
)
def test_bad_values_are_named(bad) -> None:
    key, value = next(iter(bad.items()))
    with pytest.raises(DasError, match=key):
        DasDataModule(**bad)


def test_unknown_dataset_suggests_close_names() -> None:
    with pytest.raises(DasError, match="did you mean 'digits'"):
        DasDataModule(dataset="digts")
    assert {"digits", "cifar10", "cifar100", "npz", "imagefolder"} <= set(DATASETS.names())


def test_mean_std_must_match_the_channels() -> None:
    with pytest.raises(DasError, match="3 channels"):
        load_dataset("digits", image_size=8, mean=[0.5], std=[0.5])


def test_trains_without_validation_when_val_fraction_is_zero(tmp_path) -> None:
    class Linear(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(3 * 8 * 8, 10)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.fc(x.flatten(1)), y)

        def validation_step(self, batch, _) -> None:
            raise AssertionError("no validation split, so no validation")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(max_steps=2, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, accelerator="cpu")
    trainer.fit(Linear(), datamodule=tiny_module(val_fraction=0.0))
    assert trainer.global_step == 2


# probe batches --------------------------------------------------------------------------------


def test_probe_batches_are_deterministic_per_seed() -> None:
    dm = tiny_module(augment=["crop", "flip"])
    a = probe_batches(dm, batch_size=8, num_batches=2, seed=0)
    b = probe_batches(dm, batch_size=8, num_batches=2, seed=0)
    c = probe_batches(dm, batch_size=8, num_batches=2, seed=1)
    assert len(a) == 2 and a[0][0].shape == (8, 3, 8, 8) and a[0][1].shape == (8,)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    assert not torch.equal(a[0][0], a[1][0])  # drawn without replacement


def test_probe_batches_are_not_augmented() -> None:
    dm = tiny_module(augment=["crop", "flip"])
    (x, y), = probe_batches(dm, batch_size=4, seed=5)
    idx = torch.randperm(len(dm.subset("train")), generator=torch.Generator().manual_seed(5))[:4]
    assert torch.equal(x, eval_transform(dm.mean, dm.std)(dm.subset("train").images[idx]))
    assert torch.equal(y, dm.subset("train").labels[idx])


def test_probe_batches_from_loaded_splits(digits) -> None:
    (x, y), = probe_batches(digits, batch_size=32, split="test")
    assert x.shape == (32, 3, 16, 16) and y.shape == (32,)
    with pytest.raises(DasError, match="val"):
        probe_batches(digits, split="val")


def test_probe_batches_say_how_many_images_there_are(digits) -> None:
    with pytest.raises(DasError, match=f"has {len(digits.test)}"):
        probe_batches(digits, batch_size=200, num_batches=2, split="test")


# npz ------------------------------------------------------------------------------------------


def test_npz_folder_loads(tmp_path) -> None:
    write_npz(tmp_path / "train_tiny.npz", 20)
    write_npz(tmp_path / "test_tiny.npz", 8)
    splits = load_dataset("npz", root=str(tmp_path))
    assert len(splits.train) == 20 and len(splits.test) == 8
    assert splits.image_shape == (3, 12, 12) and splits.num_classes == 4
    assert splits.mean == (0.485, 0.456, 0.406) and splits.std == (0.229, 0.224, 0.225)
    x = np.load(tmp_path / "train_tiny.npz")["x"]
    assert torch.equal(splits.train.images[3], torch.from_numpy(x[3]).permute(2, 0, 1))
    dm = DasDataModule(dataset="npz", root=str(tmp_path), image_size=8, batch_size=4, val_fraction=0.25)
    xb, _ = next(iter(dm.train_dataloader()))
    assert xb.shape == (4, 3, 8, 8) and dm.num_classes == 4


def test_npz_explicit_files_and_num_classes(tmp_path) -> None:
    write_npz(tmp_path / "a.npz", 10, classes=3)
    write_npz(tmp_path / "b.npz", 6, classes=3, x=np.zeros((6, 12, 12, 1), np.uint8))  # grey becomes RGB
    splits = load_dataset("npz", root=tmp_path, train_file="a.npz", test_file="b.npz", num_classes=5)
    assert splits.num_classes == 5 and splits.test.images.shape == (6, 3, 12, 12)
    with pytest.raises(DasError, match="at least 3"):
        load_dataset("npz", train_file=tmp_path / "a.npz", test_file=tmp_path / "b.npz", num_classes=2)


def test_npz_folder_must_hold_one_pair(tmp_path) -> None:
    for name in ("train_a.npz", "train_b.npz", "test_a.npz"):
        write_npz(tmp_path / name, 4)
    with pytest.raises(DasError, match=r"train_a\.npz.*train_b\.npz.*train_file="):
        load_dataset("npz", root=tmp_path)


@pytest.mark.parametrize(
    "override, match",
    [
        ({"x": np.zeros((4, 12, 12, 3), np.float32)}, r"'x' is float32 with shape \(4, 12, 12, 3\)"),
        ({"y": None}, r"has keys \['x'\]"),
        ({"y": np.arange(3)}, r"'y' .* shape \(3,\)"),
    ],
)
def test_malformed_npz_names_the_file(tmp_path, override, match) -> None:
    write_npz(tmp_path / "train.npz", 4, **override)
    write_npz(tmp_path / "test.npz", 4)
    with pytest.raises(DasError, match=match) as err:
        load_dataset("npz", root=tmp_path)
    assert str(tmp_path / "train.npz") in str(err.value)


def test_npz_that_is_not_an_npz(tmp_path) -> None:
    (tmp_path / "train.npz").write_text("not a zip")
    write_npz(tmp_path / "test.npz", 4)
    with pytest.raises(DasError, match="cannot read .*train.npz"):
        load_dataset("npz", root=tmp_path)


def test_shared_cifar10_npz_exact_files(shared_data) -> None:
    folder = shared_data / "cifar10"
    splits = load_dataset("npz", root=folder, train_file="train_exact_4660.npz", test_file="test_exact_846.npz")
    assert splits.train.images.shape == (4660, 3, 32, 32) and splits.test.images.shape == (846, 3, 32, 32)
    assert splits.num_classes == 10
    assert set(splits.test.labels.tolist()) == set(range(10))
    raw = np.load(folder / "test_exact_846.npz")
    assert torch.equal(splits.test.images[0], torch.from_numpy(raw["x"][0]).permute(2, 0, 1))


# imagefolder ----------------------------------------------------------------------------------


def write_folder(root: Path, split: str, classes: dict[str, int], size: tuple[int, int] = (10, 12)) -> None:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / split / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / split / name / f"{i}.png")


def test_imagefolder_loads_and_resizes(tmp_path) -> None:
    write_folder(tmp_path, "train", {"cat": 3, "dog": 2})
    write_folder(tmp_path, "val", {"dog": 2})  # val/ stands in for test/; a class may be absent
    splits = load_dataset("imagefolder", root=tmp_path, image_size=8)
    assert splits.classes == ["cat", "dog"] and splits.num_classes == 2
    assert splits.train.images.shape == (5, 3, 8, 8) and splits.train.labels.tolist() == [0, 0, 0, 1, 1]
    assert splits.test.labels.tolist() == [1, 1]
    native = load_dataset("imagefolder", root=tmp_path)
    assert native.image_shape == (3, 10, 12)


def test_imagefolder_needs_a_test_folder(tmp_path) -> None:
    write_folder(tmp_path, "train", {"cat": 1})
    with pytest.raises(DasError, match=r"train/ and test/ .*found \['train'\]"):
        load_dataset("imagefolder", root=tmp_path)


def test_imagefolder_mixed_sizes_need_image_size(tmp_path) -> None:
    write_folder(tmp_path, "train", {"cat": 1})
    write_folder(tmp_path, "test", {"cat": 1}, size=(6, 6))
    with pytest.raises(DasError, match="set image_size"):
        load_dataset("imagefolder", root=tmp_path)
    assert load_dataset("imagefolder", root=tmp_path, image_size=6).image_shape == (3, 6, 6)


# cifar ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_cifar_missing_names_the_path(tmp_path, name, folder) -> None:
    with pytest.raises(DasError, match="dataset=npz") as err:
        load_dataset(name, root=str(tmp_path))
    assert str(tmp_path / folder) in str(err.value)


def test_cifar_failed_download_is_one_line(tmp_path, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    with pytest.raises(DasError, match=r"could not download cifar10 .*no network") as err:
        load_dataset("cifar10", root=tmp_path, download=True)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_options_a_dataset_does_not_take_are_refused() -> None:
    with pytest.raises(DasError, match="only npz"):
        load_dataset("digits", train_file="x.npz", test_file="y.npz")
    with pytest.raises(DasError, match="not a dataset option"):
        load_dataset("digits", trian_file="x.npz")
