"""Train one student twice from the same initial weights: distilled (on cached teacher outputs) and alone.

The gain of distillation for a student is the test accuracy of the distilled run minus that of
the run alone, so the two runs must differ in the objective only: they start from one set of
initial weights (built once under a seed, then deep-copied), see the same batches in the same
order (one seeded generator per run, drawn identically), and use the same optimiser, schedule
and step count (:mod:`das.distill.optim`, as :class:`~das.distill.module.DistillModule` builds them).

The objective is DistillModule's: the terms of its ``losses`` config with non-zero weight when
distilled, its label terms alone (:func:`~das.distill.module.alone_terms`, i.e. ``ce``) when
alone, with logit terms taken once per batch and feature terms on each feature pair
(:func:`~das.distill.module.make_pairs`, projected by
:class:`~das.distill.pairing.FeatureProjectors`), averaged over the pairs. The teacher's side
comes from a :class:`~das.calibrate.teacher_cache.TeacherCache` instead of a forward pass.
:class:`CachedDistillObjective` is DistillModule's own objective (:mod:`das.distill.objective`) fed from the
cache; a test checks it gives DistillModule's loss on the same batch.

A plain PyTorch loop, not Lightning: a population is many short runs, where a Trainer's set-up
per run would dominate. Students train in the channels-last memory format by default: on one
CPU thread it made a ResNet-20 epoch at batch 128 about 20% shorter and an NB201 step about 1.5×
faster.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from das.calibrate.data import PopulationData
from das.calibrate.teacher_cache import MAP_DTYPES, CachedBatch, TeacherCache
from das.data.transforms import check_augment
from das.distill.losses import LossConfig, LossSpec, LossValues
from das.distill.module import DEFAULT_FEATURE_PAIRS, DEFAULT_LOSSES, FeaturePairs, alone_terms, make_pairs, needs_teacher
from das.distill.objective import FEATURE_INPUTS, DistillObjective
from das.distill.optim import OptimConfig, build_optimizer, build_scheduler, param_groups
from das.distill.pairing import FeaturePair, FeatureProjectors
from das.errors import DasError
from das.evaluate import top1_accuracy
from das.features import FeatureTap, feature_points

#: Test images per evaluation forward (the batch does not change an eval-mode network's outputs).
EVAL_BATCH = 500


@dataclass(frozen=True)
class Recipe:
    """How every student of a population is trained, distilled and alone.

    Attributes:
        epochs: training epochs (each shows every training image once, in one of its views).
        batch_size: images per optimizer step; the last partial batch of an epoch is dropped.
        losses: the distilled run's objective (DistillModule's ``losses``; default CE ½ + KD ½
            at T = 4 + cosine at scale 1); the run alone trains on its label terms (ce).
        feature_pairs: which maps the feature losses compare (DistillModule's ``feature_pairs``;
            default every stage pair).
        optim: optimiser and schedule (DistillModule's defaults: SGD, Nesterov, lr 0.05, cosine).
        augment: augmentations of the cached views, from ``crop`` and ``flip``; () for none.
        views: fixed augmented views cached per training image (1 without augmentation).
        map_dtype: storage of the cached teacher maps, ``float32`` or ``float16``.
    """

    epochs: int
    batch_size: int = 128
    losses: LossConfig = field(default_factory=lambda: copy.deepcopy(DEFAULT_LOSSES))
    feature_pairs: FeaturePairs = DEFAULT_FEATURE_PAIRS
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: tuple[str, ...] = ()
    views: int = 1
    map_dtype: str = "float32"

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "views"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DasError(f"{key}={value!r} must be an integer >= 1")
        object.__setattr__(self, "augment", check_augment(self.augment))
        if not self.augment and self.views != 1:
            raise DasError(f"views={self.views} needs augment (identical views would only cost memory); give augment=['crop', 'flip'] or views=1")
        if self.map_dtype not in MAP_DTYPES:
            raise DasError(f"map_dtype={self.map_dtype!r} must be one of {', '.join(MAP_DTYPES)}")
        alone_terms(self.loss_spec)  # a recipe whose run alone would train nothing fails now
        if not any(t.weight > 0 and needs_teacher(t) for t in self.loss_spec.terms):
            raise DasError(f"losses={self.loss_spec.to_config()} has no term that reads the teacher, so distilled and alone would be the same run; add kd or a feature loss")

    @property
    def loss_spec(self) -> LossSpec:
        return LossSpec.from_config(self.losses)

    @property
    def uses_features(self) -> bool:
        """Whether the distilled objective reads feature maps (so the teacher's maps must be cached)."""
        return bool(self.loss_spec.needs & FEATURE_INPUTS)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON-able values (the results file's settings)."""
        pairs = self.feature_pairs if isinstance(self.feature_pairs, str) else [list(p) for p in self.feature_pairs]
        optim = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.optim).items()}
        return {"epochs": self.epochs, "batch_size": self.batch_size, "losses": self.loss_spec.to_config(), "feature_pairs": pairs,
                "optim": optim, "augment": list(self.augment), "views": self.views, "map_dtype": self.map_dtype}


class CachedDistillObjective(nn.Module):
    """The Lightning module's objective (:class:`das.distill.objective.DistillObjective`) on cached teacher outputs, with its projectors.

    Args:
        spec: the recipe's losses.
        pairs: the student/teacher feature pairs (ignored alone).
        distill: all terms of non-zero weight; otherwise only the label terms.
    """

    def __init__(self, spec: LossSpec, pairs: Sequence[FeaturePair], distill: bool) -> None:
        super().__init__()
        self.objective = DistillObjective([t for t in spec.terms if t.weight > 0] if distill else alone_terms(spec))
        self.terms = self.objective.terms
        # As in DistillModule: one projector per pair whenever there is a teacher, used or not.
        self.pairs = list(pairs) if distill else []
        self.projectors = FeatureProjectors(self.pairs)

    @property
    def student_modules(self) -> list[str]:
        """The student modules whose outputs the objective reads (none unless a feature term does)."""
        return [p.student.module for p in self.pairs] if self.objective.uses_features else []

    def forward(self, logits: torch.Tensor, student_maps: Sequence[torch.Tensor], batch: CachedBatch,
                student: nn.Module | None = None) -> LossValues:
        """The loss of one batch; ``student`` is read by regularisers of its parameters (``bn_l1``)."""
        t_maps = [batch.teacher_maps[p.teacher.module] for p in self.pairs] if self.objective.uses_features else []
        return self.objective(logits, batch.labels, batch.teacher_logits, student_maps, t_maps, self.projectors, student)


@dataclass(frozen=True)
class RunResult:
    """One training run of one student.

    Attributes:
        acc: top-1 test accuracy, %.
        seconds: training and testing time.
        init_digest: SHA-256 (16 hex) of the student's weights and buffers when the run started.
        final_digest: the same of its trained weights and buffers (equal on a rerun on the CPU).
        diverged: the loss became NaN or infinite; training stopped there and the weights it had were tested.
    """

    acc: float
    seconds: float
    init_digest: str
    final_digest: str
    diverged: bool = False


@dataclass(frozen=True)
class PairResult:
    """A student trained distilled and alone from the same initial weights."""

    distilled: RunResult
    alone: RunResult

    @property
    def gain(self) -> float:
        """Distilled minus alone test accuracy, in points."""
        return self.distilled.acc - self.alone.acc


def weights_digest(model: nn.Module) -> str:
    """A short SHA-256 of a model's state (names, parameters and buffers)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def init_student(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a student with its weights drawn from ``seed`` alone (the global generator is restored after)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def evaluate(student: nn.Module, data: PopulationData, device: torch.device | str = "cpu", channels_last: bool = False) -> float:
    """Top-1 accuracy (%) of ``student`` on ``data.test``, in eval mode."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    batches = ((data.normalise(x).to(device, memory_format=fmt), y) for x, y in
               zip(data.test.images.split(EVAL_BATCH), data.test.labels.split(EVAL_BATCH)))
    return top1_accuracy(student, batches, device=device)


class StudentRun:
    """One student's training run that can stop after any epoch and go on later, in memory or from a saved state.

    Successive halving (:mod:`das.calibrate.race`) evaluates students part-way through one schedule
    and continues only the best, so a run must pause without changing what it computes: the
    student, its projectors, the optimiser, the schedule, the batch generator and the global
    generator (forked for the run, seeded with ``seed``) are all carried over, and a run
    continued from :meth:`state_dict` equals one never stopped, to the bit on the CPU.
    """

    def __init__(self, student: nn.Module, cache: TeacherCache, data: PopulationData, recipe: Recipe, seed: int, distill: bool,
                 device: torch.device | str = "cpu", channels_last: bool = True) -> None:
        self.student, self.cache, self.data, self.recipe = student, cache, data, recipe
        self.device, self.channels_last = device, channels_last
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.init_digest = weights_digest(student)
        self.epoch, self.diverged, self.seconds = 0, False, 0.0
        started = time.perf_counter()
        example = data.normalise(cache.views[0, :2])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            pairs: list[FeaturePair] = []
            if distill and recipe.uses_features:
                pairs = make_pairs(recipe.feature_pairs, feature_points(student, example), cache.teacher_points)
                if missing := sorted({p.teacher.module for p in pairs} - set(cache.modules)):
                    raise DasError(f"the teacher cache holds maps of {cache.modules} but the pairs read {missing}; build it with cached_modules(feature_pairs, ...)")
            self.objective = CachedDistillObjective(recipe.loss_spec, pairs, distill)
            student.to(device, memory_format=self.fmt)
            self.objective.to(device, memory_format=self.fmt)
            steps = cache.steps_per_epoch(recipe.batch_size)
            self.optimizer = build_optimizer(param_groups([student, self.objective.projectors], recipe.optim.weight_decay,
                                                          recipe.optim.decay_norm_and_bias), recipe.optim)
            self.scheduler = build_scheduler(self.optimizer, recipe.optim, recipe.epochs * steps, steps)
            self.generator = torch.Generator().manual_seed(seed)
            self.names = list(dict.fromkeys(self.objective.student_modules))
            self._rng = torch.get_rng_state()
        self.seconds += time.perf_counter() - started

    @property
    def finished(self) -> bool:
        """The schedule is done, or the loss diverged (nothing more to train)."""
        return self.diverged or self.epoch >= self.recipe.epochs

    def train_epochs(self, epochs: int) -> None:
        """Train up to ``epochs`` more epochs of the schedule (fewer at its end); stop at a non-finite loss."""
        started = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng)
            self.student.train()
            for _ in range(min(epochs, self.recipe.epochs - self.epoch)):
                if self.diverged:
                    break
                for batch in self.cache.epoch(self.recipe.batch_size, self.generator):
                    batch = _to(batch, self.device, self.fmt)
                    with FeatureTap(self.student, self.names) as tap:
                        logits = self.student(batch.images)
                    values = self.objective(logits, [tap.outputs[n] for n in self.objective.student_modules], batch, self.student)
                    if not math.isfinite(values.total.item()):
                        self.diverged = True
                        break
                    self.optimizer.zero_grad(set_to_none=True)
                    values.total.backward()
                    self.optimizer.step()
                    self.scheduler.step()
                self.epoch += 1
            self._rng = torch.get_rng_state()
        self.seconds += time.perf_counter() - started

    def evaluate(self) -> float:
        """Top-1 accuracy (%) on ``data.test`` now (the student goes back to train mode when training goes on)."""
        started = time.perf_counter()
        acc = evaluate(self.student, self.data, self.device, self.channels_last)
        self.seconds += time.perf_counter() - started
        return acc

    def result(self) -> RunResult:
        """Test the student as it is now."""
        acc = self.evaluate()
        return RunResult(acc, self.seconds, self.init_digest, weights_digest(self.student), self.diverged)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run in another process."""
        return {"student": self.student.state_dict(), "objective": self.objective.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "generator": self.generator.get_state(), "rng": self._rng,
                "epoch": self.epoch, "diverged": self.diverged, "seconds": self.seconds, "init_digest": self.init_digest}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["student"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self._rng = state["rng"]
        self.epoch, self.diverged, self.seconds = int(state["epoch"]), bool(state["diverged"]), float(state["seconds"])
        self.init_digest = state["init_digest"]


def train_student(student: nn.Module, cache: TeacherCache, data: PopulationData, recipe: Recipe, seed: int, distill: bool,
                  device: torch.device | str = "cpu", channels_last: bool = True) -> RunResult:
    """Train ``student`` in place, distilled from ``cache`` or alone, then test it.

    The batch order comes from a generator seeded with ``seed``, and the global generator
    (dropout, the projectors' initialisation) is seeded with it too and restored after, so a
    run depends only on its arguments, not on what ran before it.
    """
    run = StudentRun(student, cache, data, recipe, seed, distill, device, channels_last)
    run.train_epochs(recipe.epochs)
    return run.result()


def _to(batch: CachedBatch, device: torch.device | str, fmt: torch.memory_format) -> CachedBatch:
    return CachedBatch(batch.images.to(device, memory_format=fmt), batch.labels.to(device), batch.teacher_logits.to(device),
                       {m: t.to(device) for m, t in batch.teacher_maps.items()})


def train_pair(student: nn.Module, cache: TeacherCache, data: PopulationData, recipe: Recipe, seed: int,
               device: torch.device | str = "cpu", channels_last: bool = True) -> PairResult:
    """Train copies of ``student`` (its weights as given are the initial ones) distilled, then alone."""
    distilled = train_student(copy.deepcopy(student), cache, data, recipe, seed, True, device, channels_last)
    alone = train_student(copy.deepcopy(student), cache, data, recipe, seed, False, device, channels_last)
    return PairResult(distilled, alone)
