"""The teacher cache holds exactly what a live forward of the frozen teacher gives on the same views."""

from __future__ import annotations

import pytest
import torch

from das.calibrate import build_teacher_cache, cached_modules
from das.calibrate.teacher_cache import MEMORY_BYTES, augmented_views
from das.errors import DasError


def live(teacher, x, module):
    """An independent live forward: a plain hook, eval mode, no gradient."""
    seen = {}
    handle = dict(teacher.named_modules())[module].register_forward_hook(lambda _m, _i, out: seen.update(map=out))
    teacher.eval()
    with torch.no_grad():
        logits = teacher(x)
    handle.remove()
    return logits, seen["map"]


@pytest.mark.parametrize(("augment", "views"), [((), 1), (("crop", "flip"), 2)])
def test_cached_outputs_equal_a_live_teacher_forward(data, teacher, augment, views) -> None:
    cache = build_teacher_cache(teacher, data, ["body"], augment=augment, views=views, seed=3, batch_size=48)
    assert cache.views.shape == (views, 64, 3, 16, 16) and cache.logits.shape == (views, 64, 10)
    for k in range(views):
        logits, fmap = live(teacher, data.normalise(cache.views[k]), "body")
        torch.testing.assert_close(cache.logits[k], logits, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(cache.maps["body"][k], fmap, rtol=1e-6, atol=1e-6)
    # A training batch drawn by index carries the teacher's outputs on exactly its own images.
    batch = next(cache.epoch(16, torch.Generator().manual_seed(0)))
    logits, fmap = live(teacher, batch.images, "body")
    torch.testing.assert_close(batch.teacher_logits, logits, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(batch.teacher_maps["body"], fmap, rtol=1e-6, atol=1e-6)
    if augment:  # the views are augmented, differ from each other, and come from the seed alone
        assert not torch.equal(cache.views[0], cache.views[1]) and not torch.equal(cache.views[0], data.train.images)
        assert torch.equal(cache.views, augmented_views(data.train.images, augment, views, seed=3))
    else:
        assert torch.equal(cache.views[0], data.train.images)


def test_float16_maps_are_within_their_stated_tolerance(data, teacher) -> None:
    full = build_teacher_cache(teacher, data, ["body"])
    half = build_teacher_cache(teacher, data, ["body"], map_dtype="float16")
    assert half.maps["body"].dtype == torch.float16 and half.nbytes < full.nbytes
    torch.testing.assert_close(half.maps["body"].float(), full.maps["body"], rtol=1e-3, atol=1e-3)


def test_a_map_several_pairs_read_is_cached_once(data, teacher) -> None:
    """Stage pairing can send several student stages to one teacher map (a teacher with one map point)."""
    once = build_teacher_cache(teacher, data, ["body"])
    thrice = build_teacher_cache(teacher, data, ["body", "body", "body"])
    assert list(thrice.maps) == ["body"] and torch.equal(thrice.maps["body"], once.maps["body"])


def test_an_epoch_shows_each_image_once_in_full_batches(data, teacher) -> None:
    cache = build_teacher_cache(teacher, data, [], augment=("flip",), views=3)
    batches = list(cache.epoch(20, torch.Generator().manual_seed(0)))
    assert len(batches) == cache.steps_per_epoch(20) == 3 and all(len(b.labels) == 20 for b in batches)  # 64 = 3 × 20 + 4 dropped
    assert cache.maps == {} and batches[0].teacher_maps == {}


def test_cached_modules_follow_the_feature_pairs(teacher) -> None:
    points = teacher.feature_points()
    assert cached_modules("final", points) == ["body"]
    assert cached_modules([["lastact", "body"]], points) == ["body"]
    with pytest.raises(DasError, match="feature_pairs"):
        cached_modules("all", points)


def test_views_without_augmentation_are_refused(data, teacher) -> None:
    with pytest.raises(DasError, match="views=2"):
        build_teacher_cache(teacher, data, [], views=2)


@pytest.mark.parametrize(("augment", "views"), [((), 1), (("crop", "flip"), 2)])
def test_a_memory_mapped_cache_gives_the_in_memory_batches_to_the_bit(data, teacher, augment, views, tmp_path) -> None:
    kw = {"augment": augment, "views": views, "seed": 3, "batch_size": 24, "map_dtype": "float16"}
    memory = build_teacher_cache(teacher, data, ["body"], **kw)
    mapped = build_teacher_cache(teacher, data, ["body"], memory_bytes=0, spill_dir=tmp_path, **kw)
    assert memory.spilled is None and mapped.spilled == tmp_path and "memory-mapped" in mapped.where
    assert list(tmp_path.iterdir()) == []  # the files are unlinked once mapped: nothing is left behind
    for a, b in ((memory.views, mapped.views), (memory.logits, mapped.logits), (memory.maps["body"], mapped.maps["body"])):
        assert a.dtype == b.dtype and torch.equal(a, b)
    for a, b in zip(memory.epoch(16, torch.Generator().manual_seed(1)), mapped.epoch(16, torch.Generator().manual_seed(1)), strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.teacher_logits, b.teacher_logits)
        assert torch.equal(a.teacher_maps["body"], b.teacher_maps["body"])


def test_a_student_trains_the_same_on_a_mapped_cache(data, teacher, students, recipe, tmp_path) -> None:
    from das.calibrate import train_student
    from das.calibrate.trainer import init_student

    memory = build_teacher_cache(teacher, data, ["body"])
    mapped = build_teacher_cache(teacher, data, ["body"], memory_bytes=0, spill_dir=tmp_path)
    runs = [train_student(init_student(lambda: students[0].build(10), 0), cache, data, recipe, seed=0, distill=True) for cache in (memory, mapped)]
    assert runs[0].final_digest == runs[1].final_digest and runs[0].acc == runs[1].acc


def test_only_a_cache_over_the_limit_is_mapped(data, teacher, tmp_path) -> None:
    cache = build_teacher_cache(teacher, data, ["body"])
    size = cache.logits.nbytes + cache.maps["body"].nbytes  # no augmentation: the views are the images already held
    assert build_teacher_cache(teacher, data, ["body"], memory_bytes=size, spill_dir=tmp_path).spilled is None
    assert build_teacher_cache(teacher, data, ["body"], memory_bytes=size - 1, spill_dir=tmp_path).spilled == tmp_path
    assert MEMORY_BYTES == 2 * 2**30


def test_a_spill_without_room_is_one_line_before_the_teacher_runs(data, teacher, tmp_path, monkeypatch) -> None:
    import shutil
    from collections import namedtuple

    monkeypatch.setattr(shutil, "disk_usage", lambda _: namedtuple("usage", "total used free")(10**9, 10**9, 1000))
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    with pytest.raises(DasError, match=rf"needs 0\.\d+ GB of files in {tmp_path}, which has 0\.00 GB free"):
        build_teacher_cache(teacher, data, ["body"], memory_bytes=0, spill_dir=tmp_path)
    assert len(calls) <= 2  # the shape probes only (feature points and one output), never the cache's pass
