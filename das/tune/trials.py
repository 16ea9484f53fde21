"""Each trial's short distillation: the population trainer on the teacher's cached outputs, judged on the validation split.

Why not a Lightning fit per trial: not Lightning's loop, which costs nothing measurable
(docs/results.md, "Lightning's cost"), but the live teacher. A Lightning fit runs the teacher
forward on every batch of every epoch of every trial, about as costly as the student's own
forward and backward for ResNet-56 → ResNet-20. :class:`~das.calibrate.trainer.StudentRun` reads
the teacher's outputs from a cache built once per process
(:func:`~das.calibrate.teacher_cache.build_teacher_cache`; docs/results.md, "What the teacher
cache saves") and shared by all its trials; trains on DistillModule's own objective (a test holds
the two equal on one batch); pauses after any epoch without changing what it computes, so a trial
reports each epoch to the pruner; writes no checkpoint or log per trial; and is bit-reproducible
on the CPU. What it lacks: Lightning's precisions, strategies and compile (trials run float32 on
the Trainer's first device), and live augmentation (``tune.views`` fixed augmented views per
image, or the images as loaded).

Every trial starts from the same initial weights (a copy of the configured student, as the final
run would start), sees the same batches (``tune.seed``) and the training images of
``tune.train_images`` (a stratified subset) or all of them; it is tested on the validation split
after each epoch. The test split is never read here.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from das.calibrate.data import PopulationData
from das.calibrate.teacher_cache import TeacherCache, build_teacher_cache, cached_modules
from das.calibrate.trainer import Recipe, StudentRun
from das.data import DasDataModule
from das.distill.objective import FEATURE_INPUTS
from das.distill.losses import LossSpec
from das.distill.optim import OptimConfig
from das.features import feature_points
from das.search.short_runs import population_data
from das.tune.config import TuneConfig

#: Students train in channels-last, as the population trainer does by default (faster convolutions on a CPU).
CHANNELS_LAST = True


def short_schedule(optim: OptimConfig, lr: float, epochs: int, max_epochs: int) -> OptimConfig:
    """The final run's optimiser at ``lr``, its schedule compressed from ``max_epochs`` into ``epochs``.

    Warmup and step milestones are scaled by ``epochs / max_epochs`` (milestones rounded to whole
    epochs, at least 1, merged where they meet; those not after the warmup are dropped).
    """
    ratio = epochs / max_epochs
    warmup = optim.warmup_epochs * ratio
    milestones = optim.milestones
    if milestones:
        scaled = sorted({max(1, round(m * ratio)) for m in milestones})
        milestones = tuple(m for m in scaled if m > warmup) or (epochs,)
    return dataclasses.replace(optim, lr=lr, warmup_epochs=warmup, milestones=milestones)


class ShortRuns:
    """Builds the trials' short distillations of one student from one teacher.

    Args:
        student: the configured student, untrained; each trial trains a copy.
        teacher: the frozen teacher.
        data: the data module (its training split, or a subset, and its validation split).
        cfg: the study's settings.
        optim: the final run's optimiser settings (model.*).
        max_epochs: the final run's epochs (its schedule is compressed into ``cfg.epochs``).
        feature_pairs: model.feature_pairs (cached when the study does not tune the pairing).
        uses_features: whether any trial may read feature maps (else only logits are cached).
        device: where trials train.
        spill_dir: where a cache too large for memory is mapped from files.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, data: DasDataModule, cfg: TuneConfig, optim: OptimConfig, max_epochs: int,
                 feature_pairs: Any, uses_features: bool, device: torch.device | str, spill_dir: Path,
                 log: Callable[[str], None] = print) -> None:
        self.student = copy.deepcopy(student).cpu().float()
        self.teacher, self.data, self.cfg, self.optim, self.max_epochs = teacher, data, cfg, optim, max_epochs
        self.pairings = list(cfg.feature_pairs) if cfg.feature_pairs is not None else [feature_pairs]
        self.uses_features, self.device, self.spill_dir, self.log = uses_features, device, spill_dir, log
        self._population: PopulationData | None = None
        self._cache: TeacherCache | None = None
        self.cache_seconds = 0.0

    @property
    def population(self) -> PopulationData:
        """The trials' training images (a subset when asked) and the validation split to judge them on."""
        if self._population is None:
            self._population = population_data(self.data, self.cfg.train_images, self.cfg.seed)
        return self._population

    @property
    def cache(self) -> TeacherCache:
        """The teacher's outputs on the trials' training views, built on first use (a study read back needs none)."""
        if self._cache is None:
            started = time.perf_counter()
            population = self.population
            teacher = self.teacher.to(self.device)
            modules: list[str] = []
            if self.uses_features:
                example = population.normalise(population.train.images[:2]).to(self.device)
                points = feature_points(teacher, example)
                for pairs in self.pairings:
                    modules += cached_modules(pairs, points)
            augment = tuple(self.data.augment) if self.cfg.views > 1 else ()
            self._cache = build_teacher_cache(teacher, population, modules, augment, self.cfg.views, self.cfg.seed,
                                              device=self.device, spill_dir=self.spill_dir)
            self.cache_seconds = time.perf_counter() - started
            self.log(f"tune: the teacher's outputs on {len(population.train)} training images × {self.cfg.views} view(s) cached "
                     f"{self._cache.where} in {self.cache_seconds:.1f} s; trials are judged on {len(population.test)} validation images")
        return self._cache

    def recipe(self, model_recipe: dict[str, Any]) -> Recipe:
        """The population trainer's recipe for a trial of ``model_recipe`` (``losses``, ``feature_pairs``, ``lr``)."""
        augment = tuple(self.data.augment) if self.cfg.views > 1 else ()
        return Recipe(epochs=self.cfg.epochs, batch_size=int(self.data.hparams["batch_size"]), losses=model_recipe["losses"],
                      feature_pairs=model_recipe["feature_pairs"], optim=short_schedule(self.optim, model_recipe["lr"], self.cfg.epochs, self.max_epochs),
                      augment=augment, views=self.cfg.views)

    def start(self, model_recipe: dict[str, Any]) -> StudentRun:
        """A paused run of ``model_recipe`` at epoch 0, from the configured student's initial weights."""
        recipe = self.recipe(model_recipe)
        return StudentRun(copy.deepcopy(self.student), self.cache, self.population, recipe, self.cfg.seed, True, self.device, CHANNELS_LAST)


def reads_features(losses: Any) -> bool:
    """Whether a loss config has a term of non-zero weight that reads feature maps."""
    return bool(LossSpec.from_config(losses).needs & FEATURE_INPUTS)
