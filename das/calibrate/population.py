"""Distillation ground truth: train a population of students distilled and alone, and record the gain.

Whether a distillation-aware proxy ranks students by how much a teacher helps them can only be
checked against students actually distilled. :func:`train_population` trains each architecture
of a list briefly twice from the same initial weights, once with DistillModule's default recipe
(CE + Hinton KD at T = 4 + the cosine loss on the final feature maps) and once alone (CE only),
under the same schedule and seed, tests both, and records per student its spec, parameters,
FLOPs, both accuracies, the gain (distilled − alone, in points) and the seconds each run took.

The teacher runs once per training view for the whole population
(:mod:`das.calibrate.teacher_cache`), not once per batch per student. Each finished student is
appended to a JSON-lines results file at once (:mod:`das.calibrate.results`); rerunning the same
call skips the students already there and refuses a file written with other settings. Every
student is built, shuffled and trained from ``seed`` alone, so on the CPU a rerun gives the same
figures, and a student's figures do not depend on which students were trained before it.

The CPU thread count is the caller's (``torch.set_num_threads``); it is recorded per student. On
a 2-core machine already running another job, a ResNet-20 epoch took 5× longer on 2 threads
than on 1 (the OpenMP threads wait on each other), so give a shared machine 1 thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from das.calibrate.data import PopulationData
from das.calibrate.results import ResultsFile
from das.calibrate.teacher_cache import TeacherCache, build_teacher_cache, cached_modules
from das.calibrate.trainer import Recipe, init_student, train_pair, train_student, weights_digest
from das.features import feature_points
from das.models import arch_spec, build_model
from das.report.provenance import now_iso
from das.spec import ArchSpec
from das.stats import count_flops, count_params

KIND = "das.calibrate.population"


def student_key(arch: ArchSpec | str) -> tuple[ArchSpec | str, str]:
    """The student a spec names (an ArchSpec, or a network name such as ``resnet20``) and its key in the results file."""
    spec = arch_spec(arch) if isinstance(arch, str) else arch
    if spec is None:
        return str(arch), str(arch)
    return spec, spec.to_json()


def population_settings(teacher_name: str, teacher: nn.Module, data: PopulationData, recipe: Recipe, seed: int, channels_last: bool) -> dict[str, Any]:
    """What makes two students' figures comparable: teacher weights, data, recipe, seed, memory format."""
    return {"kind": KIND, "teacher": teacher_name, "teacher_weights": weights_digest(teacher), "data": data.digest(),
            "train_images": len(data.train), "test_images": len(data.test), "input_shape": list(data.input_shape),
            "num_classes": data.num_classes, "recipe": recipe.to_dict(), "seed": seed, "channels_last": channels_last}


def train_population(
    archs: Sequence[ArchSpec | str],
    teacher: nn.Module | str,
    data: PopulationData,
    recipe: Recipe,
    results_path: str | Path,
    seed: int = 0,
    teacher_checkpoint: str | None = None,
    device: torch.device | str = "cpu",
    channels_last: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
    keep_cache: bool = False,
    alone: bool = True,
) -> list[dict[str, Any]]:
    """Train every student distilled and alone; append each record to ``results_path`` as it finishes.

    Args:
        archs: the students: ArchSpecs, or anything :func:`das.models.build_model` takes
            (an arch JSON, a teacher-registry name such as ``resnet20``). Repeats are trained once.
        teacher: a teacher spec (``resnet56``, ``timm:NAME``, ``module:function``) or a built network.
        data: the training and test images (:class:`PopulationData`).
        recipe: the training recipe shared by every student and both runs.
        results_path: the JSON-lines file (settings line, then one line per student); a teacher cache
            past :data:`~das.calibrate.teacher_cache.MEMORY_BYTES` is memory-mapped from files made
            (and at once unlinked) in its folder.
        seed: seeds each student's initial weights, batch order and augmented views.
        teacher_checkpoint: weights for a teacher given as a spec, loaded strictly.
        device: where students (and the teacher, once) run; figures are bit-reproducible on the CPU.
        channels_last: train in the channels-last memory format (faster on the CPU for
            convolutional students); part of the settings because it changes rounding.
        progress: show a progress bar (students done, ETA).
        log: where the one-line notes go (the teacher cache's size and cost).
        keep_cache: keep the teacher cache in memory after returning, for a next call with the same
            teacher, data and views (a benchmark timing one student before the rest); off, it is freed.
        alone: also train each student alone; without it (a short run a user would see, distilled
            only) the alone fields are None and the settings say so.

    Returns:
        One record per distinct student of ``archs``, in order: ``key``, ``arch``, ``spec``,
        ``params``, ``flops``, ``distilled_acc``, ``alone_acc``, ``gain``, ``seconds_distilled``,
        ``seconds_alone``, ``seed``, ``init_digest``, ``distilled_diverged``, ``alone_diverged``,
        ``threads``, ``device``, ``date``.
    """
    students = dict(student_key(a)[::-1] for a in archs)  # key -> spec, first occurrence's order
    if isinstance(teacher, str):
        teacher_name, teacher = teacher, build_model(teacher, data.num_classes, checkpoint=teacher_checkpoint)
    else:
        teacher_name = type(teacher).__name__
    settings = population_settings(teacher_name, teacher, data, recipe, seed, channels_last)
    results = ResultsFile(results_path, settings if alone else {**settings, "runs": "distilled only"})
    todo = [k for k in students if results.find(key=k) is None]
    if todo:
        cache = _teacher_cache(teacher, data, recipe, seed, device, log, keep_cache, Path(results_path).parent)
        with tqdm(total=len(students), initial=len(students) - len(todo), desc="population", unit="student", disable=not progress) as bar:
            for key in todo:
                results.add(_train_one(students[key], key, cache, data, recipe, seed, device, channels_last, alone))
                last = results.records[-1]
                bar.set_postfix_str(f"last gain {last['gain']:+.2f} pts" if alone else f"last {last['distilled_acc']:.2f}%", refresh=False)
                bar.update()
    return [results.find(key=k) for k in students]


#: The last teacher cache kept (``keep_cache``) in this process, with what it was built from: a next call
#: with the same teacher, data and views reuses it.
_last_cache: tuple[tuple, TeacherCache] | None = None


def _teacher_cache(teacher: nn.Module, data: PopulationData, recipe: Recipe, seed: int, device: torch.device | str,
                   log: Callable[[str], None], keep: bool, spill_dir: Path) -> TeacherCache:
    """The teacher's outputs over every training view: built once, or the last build when it is the same."""
    global _last_cache
    example = data.normalise(data.train.images[:2])
    modules = cached_modules(recipe.feature_pairs, feature_points(teacher, example)) if recipe.uses_features else []
    identity = (weights_digest(teacher), data.digest(), tuple(modules), tuple(recipe.augment), recipe.views, seed, recipe.map_dtype, str(device))
    if _last_cache is not None and _last_cache[0] == identity:
        log("teacher cache: reused from the last population trained in this process")
        return _last_cache[1]
    _last_cache = None  # free the old one before building the next
    started = time.perf_counter()
    cache = build_teacher_cache(teacher.to(device), data, modules, recipe.augment, recipe.views, seed, recipe.map_dtype, device=device,
                                spill_dir=spill_dir)
    log(f"teacher cache: {len(cache)} images × {cache.num_views} view(s), logits + {modules or 'no maps'}, "
        f"{cache.nbytes / 1e6:.1f} MB {cache.where}, built in {time.perf_counter() - started:.1f} s")
    if keep:
        _last_cache = (identity, cache)
    return cache


def _train_one(spec: ArchSpec | str, key: str, cache: TeacherCache, data: PopulationData, recipe: Recipe, seed: int,
               device: torch.device | str, channels_last: bool, alone: bool = True) -> dict[str, Any]:
    student = init_student(lambda: build_model(spec, data.num_classes), seed)
    params, flops = count_params(student), count_flops(student, data.input_shape)
    if alone:
        pair = train_pair(student, cache, data, recipe, seed, device, channels_last)
        distilled, by_itself, gain = pair.distilled, pair.alone, pair.gain
    else:
        distilled, by_itself, gain = train_student(student, cache, data, recipe, seed, True, device, channels_last), None, None
    return {"key": key, "arch": str(spec), "spec": spec.to_dict() if isinstance(spec, ArchSpec) else spec,
            "params": params, "flops": flops, "distilled_acc": distilled.acc, "alone_acc": by_itself and by_itself.acc, "gain": gain,
            "seconds_distilled": distilled.seconds, "seconds_alone": by_itself.seconds if by_itself else 0.0, "seed": seed,
            "init_digest": distilled.init_digest, "distilled_diverged": distilled.diverged,
            "alone_diverged": by_itself and by_itself.diverged, "threads": torch.get_num_threads(), "device": str(device), "date": now_iso()}
