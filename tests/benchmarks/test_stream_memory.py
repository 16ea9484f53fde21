"""benchmarks/stream_memory.py: a tiny run writes every figure from child processes; bad input is one line."""

from __future__ import annotations

import json

import pytest

from benchmarks import stream_memory as sm
from das.errors import DasError


def test_a_tiny_run_writes_every_figure(tmp_path) -> None:
    out = tmp_path / "sm.json"
    assert sm.main(["--sizes", "24,48", "--side", "16", "--classes", "3", "--batch", "8", "--model", "tests.tinynets:TinyNet",
                    "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["size"] for r in result["rows"]] == [24, 48]
    for row in result["rows"]:
        assert row["images"] == row["size"] and row["epoch_images"] == row["size"] // 8 * 8  # drop_last
        assert row["peak_rss"]["main_mb"] >= row["peak_rss"]["after_imports_mb"] > 0 and row["peak_rss"]["largest_worker_mb"] > 0
        assert row["in_memory_images_per_s"] > 0 and row["streamed_images_per_s"] > 0 and row["index_bytes"] < 100 * row["size"]
    assert set(result["rss_ratio_largest_to_smallest"]) == {"main_mb", "total_mb"} and "rate_goal_met" in result
    files = sorted(p.name for p in (tmp_path / "work" / "jpeg_48_16px_3c" / "train" / "c001").iterdir())
    assert len(files) == 16 and files[0].endswith(".jpg")  # classes in turn: 48 images over 3 folders


@pytest.mark.parametrize(("flags", "words"), [
    (["--sizes", "100,100"], "--sizes"),
    (["--sizes", "many"], "--sizes"),
    (["--side", "4"], "--side 4"),
    (["--sizes", "50", "--batch", "64"], "at least --batch 64"),
    (["--workers", "-1"], "--workers -1"),
])
def test_bad_input_is_one_line(flags, words, tmp_path) -> None:
    with pytest.raises(DasError, match=words):
        sm.main([*flags, "--out", str(tmp_path / "x.json")])
