"""WebDataset shards: a folder written to shards reads back the same images; epochs shuffle; other formats are refused."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
import torch

from das.cli import USER_ERROR, guarded
from das.data import DasDataModule
from das.data import shards as shard_module
from das.data.shards import INFO, write_shards
from das.errors import DasError
from tests.data.test_streamed import write_folder


@pytest.fixture
def folder(tmp_path) -> Path:
    write_folder(tmp_path / "images", "train", {"ant": 6, "bee": 5, "cat": 5}, fmt="jpg")
    write_folder(tmp_path / "images", "val", {"ant": 2, "bee": 2}, fmt="jpg", seed=1)
    return tmp_path / "images"


@pytest.fixture
def shards(folder, tmp_path) -> Path:
    write_shards(folder, tmp_path / "shards", shard_size=4, seed=0)
    return tmp_path / "shards"


def module(root: Path, dataset: str = "webdataset", **kw) -> DasDataModule:
    return DasDataModule(**{"dataset": dataset, "root": str(root), "image_size": 10, "batch_size": 4, "augment": [], "val_fraction": 0.0, **kw})


def fingerprints(images: torch.Tensor, labels: torch.Tensor) -> list[tuple[str, int]]:
    return sorted((hashlib.sha256(x.numpy().tobytes()).hexdigest(), int(y)) for x, y in zip(images, labels))


def test_a_folder_round_trips_through_shards(folder, shards) -> None:
    info = json.loads((shards / INFO).read_text())
    assert info["num_classes"] == 3 and info["classes"] == ["ant", "bee", "cat"]
    assert info["splits"]["train"]["shard_lengths"] == [4, 4, 4, 4] and info["splits"]["test"]["num_samples"] == 4
    streamed, lazy = module(shards), module(folder, dataset="folder")
    assert streamed.num_classes == 3 and streamed.splits.classes == ["ant", "bee", "cat"]
    for split in ("train", "test"):  # the same images and labels, in the writer's shuffled order
        a, b = streamed.subset(split), lazy.subset(split)
        assert fingerprints(a.images, a.labels) == fingerprints(b.images, b.labels)
        assert not torch.equal(a.labels, b.labels) or split == "test"  # shuffled across shards (the folder is sorted by class)
    members = tarfile.open(shards / "train-000000.tar").getnames()
    assert members[:2] == ["000000000.jpg", "000000000.cls"]  # the original JPEG bytes, not re-encoded


def test_each_epoch_shows_every_sample_once_in_a_new_order(shards) -> None:
    dm = module(shards, batch_size=16)
    stream = dm.splits.train.dataset(lambda image: torch.tensor(0), shuffle=True, seed=0)
    epochs = [[label for _, label in stream] for _ in range(3)]
    assert all(sorted(e) == sorted(epochs[0]) and len(e) == 16 for e in epochs)
    assert len({tuple(e) for e in epochs}) == 3
    again = dm.splits.train.dataset(lambda image: torch.tensor(0), shuffle=True, seed=0)
    assert [label for _, label in again] == epochs[0]  # seeded: the same first epoch again


def test_workers_share_the_shards_and_validation_is_whole_shards(shards) -> None:
    dm = module(shards, val_fraction=0.25, num_workers=2, batch_size=2)
    assert dm.split_size("val") == 4 and dm.split_size("train") == 12  # 1 of 4 shards held out
    labels = torch.cat([y for _, y in dm.train_dataloader()])
    val = torch.cat([y for _, y in dm.val_dataloader()])
    assert len(labels) == 12 and len(val) == 4  # 2 workers × 3 batches, each worker its own shards
    assert sorted(labels.tolist() + val.tolist()) == sorted(module(shards).subset("train").labels.tolist())


def test_probe_batches_are_the_first_images_in_shard_order(shards) -> None:
    dm = module(shards)
    first = dm.subset("train", torch.arange(3))
    assert torch.equal(dm.draw("train", 3, seed=5), torch.arange(3))
    assert torch.equal(first.images, dm.subset("train").images[:3])


# bad input: one line each ---------------------------------------------------------------------


def write_tar(path: Path, files: dict[str, bytes]) -> None:
    import io

    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def info(files: list[str], lengths: list[int], **extra) -> str:
    return json.dumps({"num_classes": 2, "splits": {"train": {"filenames": files, "shard_lengths": lengths},
                                                     "test": {"filenames": files, "shard_lengths": lengths}}, **extra})


@pytest.mark.parametrize(("case", "expected"), [
    ("tars_without_info", r"holds 1 \.tar file\(s\) but no _info\.json; das reads WebDataset tar shards"),
    ("litdata", r"an index\.json and \.bin chunks \(a litdata/StreamingDataset directory\?\)"),
    ("not_json", r"cannot read .*_info\.json as JSON"),
    ("no_splits", r"needs \"splits\""),
    ("not_a_tar", r"data-0\.tar is not a readable tar shard"),
    ("other_samples", r"the first sample of .*data-0\.tar holds \['0\.txt', '0\.json'\]"),
    ("a_url", r"shard 'pipe:cat data-0\.tar' is not a file under"),
    ("no_num_classes", r"num_classes=None; add \"num_classes\""),
])
def test_a_shard_directory_of_another_format_is_one_line(tmp_path, case, expected) -> None:
    tar = tmp_path / "data-0.tar"
    write_tar(tar, {"0.txt": b"hello", "0.json": b"{}"} if case == "other_samples" else {"0.jpg": b"x", "0.cls": b"1"})
    text = {"not_json": "{not json", "no_splits": json.dumps({"num_classes": 2}), "a_url": info(["pipe:cat data-0.tar"], [1]),
            "no_num_classes": info(["data-0.tar"], [1], num_classes=None)}.get(case, info(["data-0.tar"], [1]))
    if case == "not_a_tar":
        tar.write_bytes(b"plain text, not a tar archive" * 40)
    if case == "litdata":
        tar.unlink()
        (tmp_path / "index.json").write_text("{}")
        (tmp_path / "chunk-0-0.bin").write_bytes(b"\0")
    if case not in ("tars_without_info", "litdata"):
        (tmp_path / INFO).write_text(text)
    with pytest.raises(DasError, match=expected) as err:
        module(tmp_path).setup()
    assert "\n" not in str(err.value)


def test_a_corrupt_image_in_a_shard_names_the_sample_and_shard(tmp_path) -> None:
    write_tar(tmp_path / "s.tar", {"a.jpg": b"\xff\xd8 truncated", "a.cls": b"0"})
    (tmp_path / INFO).write_text(info(["s.tar"], [1]))
    with pytest.raises(DasError, match=r"cannot decode image jpg of sample 'a' of .*s\.tar"):
        list(module(tmp_path, num_workers=1).test_dataloader())


def test_the_converter_is_a_command_that_refuses_a_used_folder(folder, shards, tmp_path, capsys) -> None:
    assert guarded(shard_module.main, [str(folder), str(shards)]) == USER_ERROR
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert guarded(shard_module.main, [str(folder), str(tmp_path / "new"), "--shard-size", "10"]) == 0
    assert "train: 16 images in 2 shard(s)" in capsys.readouterr().out


def test_a_failed_conversion_leaves_nothing(folder, tmp_path) -> None:
    (folder / "train" / "cat" / "9.jpg").symlink_to(tmp_path / "gone.jpg")  # listed, but cannot be read
    with pytest.raises(DasError, match=r"cannot read .*9\.jpg .*nothing was written"):
        write_shards(folder, tmp_path / "out", shard_size=4)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
