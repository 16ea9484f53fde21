"""What a search is told: typed dataclasses that jsonargparse fills from YAML and flags."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from das.errors import DasError


@dataclass
class TeacherConfig:
    """The trained network students are ranked against.

    Args:
        spec: a teacher spec: a registered name (resnet20, resnet56, ...), timm:NAME,
            torchvision:NAME, or package.module:function.
        checkpoint: local weights for it; if unset, das trains the teacher once on the dataset
            (saved under RUN_DIR/teacher and reused by later runs).
        epochs: epochs for that one-time training.
        lr: peak learning rate for that training.
        init: which weights DisWOT compares students with: random (a seeded N(0, 1)
            re-initialisation of the teacher's architecture, read in train mode: the DisWOT
            authors' protocol) or trained (the trained weights, eval mode).
    """

    spec: str = "resnet20"
    checkpoint: str | None = None
    epochs: int = 15
    lr: float = 0.1
    init: Literal["random", "trained"] = "random"


def check_teacher_recipe(cfg: TeacherConfig) -> None:
    """Refuse a one-time teacher training that would not train: at least one epoch at a positive, finite LR.

    Zero epochs would save an untrained teacher (chance accuracy) and reuse it in every later
    run, so it is refused rather than trained; a teacher given by ``checkpoint`` is not trained,
    and its recipe is not checked.
    """
    if cfg.checkpoint is not None:
        return
    epochs, lr = cfg.epochs, cfg.lr
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise DasError(f"teacher.epochs={epochs!r} must be an integer >= 1: the epochs das trains the teacher for when no "
                       "--teacher.checkpoint is given (the quickstart uses 15); give --teacher.checkpoint to use trained weights")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise DasError(f"teacher.lr={lr!r} must be a positive number: the peak SGD learning rate of the teacher's training "
                       "(the quickstart uses 0.1)")


@dataclass
class SpaceConfig:
    """The student search space.

    Args:
        name: a registered space (nb201, resnet_cifar, timm), or package.module:function for
            your own define-by-run space (a function of an Optuna trial returning the network).
        args: the space's construction arguments over its own defaults, so a name alone works
            (nb201: C, the stem width, 16, and N, the cells per stage, 5; resnet_cifar: C, the
            first stage's base width, 16, and its block and width-multiplier choices; timm:
            family (resnet, mobilenetv3, efficientnet) and its choice lists; your function: its
            keyword arguments after the trial).
    """

    name: str = "nb201"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class BudgetConfig:
    """Hard limits on a student's size and speed; unset means unlimited.

    A candidate over a limit is rejected before any proxy scores it: recorded as infeasible with
    its size, it does not use up one of ``study.trials``.

    Args:
        max_params: trainable parameters.
        max_flops: forward FLOPs for one input (2 per multiply-accumulate).
        max_latency_ms: milliseconds of one forward pass at the probe batch size on the search
            device (the median of 5 timed passes), measured only for candidates within the
            params and FLOPs limits.
    """

    max_params: int | None = None
    max_flops: int | None = None
    max_latency_ms: float | None = None

    def __str__(self) -> str:
        """The limits as the flags that set them (``budget.max_params=40000``), for messages; ``no budget`` when unlimited."""
        limits = [f"budget.{key}={value}" for key, value in vars(self).items() if value is not None]
        return ", ".join(limits) or "no budget"


@dataclass
class StudyConfig:
    """How Optuna searches.

    Args:
        trials: how many distinct architectures within the budget to score; rerunning resumes
            until this many are scored. A resampled or isomorphic architecture reuses its score
            and an over-budget one is rejected unscored: neither uses up a trial.
        objective: the proxy maximised. The default, size_first, is the largest network, with
            MeCo breaking exact ties in size: no zero-cost score beat size on both distilled
            populations (docs/decisions.md, "The default without calibration"); calibrate on
            your own space (calibrate.students) to do better than size.
        objectives: instead of ``objective``, several to trade off, e.g. [ensemble, params]:
            every proxy is maximised except the size terms params and flops, which are
            minimised here; the non-dominated candidates are written to RUN_DIR/pareto.json.
        report: further proxies recorded per candidate (e.g. DisWOT's two terms).
        sampler: tpe (learns the budget from the rejected candidates), random, nsga2 (a genetic
            algorithm for several objectives, budget as constraint) or grid (every distinct
            member of a finite space once, in the space's order).
        seed: seeds the sampler and the probe batches.
        probe_batch_size: images per probe batch.
        probe_batches: number of probe batches.
        storage: an Optuna storage URL; unset means a journal file in the run directory
            (several processes on one machine may share it; use PostgreSQL across machines).
        study_name: the study's name inside the storage.
        reference_size: for an ``ensemble`` objective or report, how many random in-budget
            architectures form the reference population its ranks are relative to.
    """

    trials: int = 100
    objective: str = "size_first"
    objectives: list[str] | None = None
    report: list[str] = field(default_factory=lambda: ["diswot", "diswot_relation", "diswot_semantic"])
    sampler: str = "tpe"
    seed: int = 0
    probe_batch_size: int = 64
    probe_batches: int = 1
    storage: str | None = None
    study_name: str = "das"
    reference_size: int = 100


@dataclass
class CalibrateConfig:
    """Calibration on the user's own space: a selection rule fitted on a few distilled students.

    Before the search, ``students`` random in-budget members of the space are distilled from the
    teacher for ``epochs`` epochs (das.calibrate's recipe, on the search's training images, tested
    on its validation split) and scored by every proxy that can run; the search then ranks by
    ``params``, one score, or a ridge combination of size, MeCo and AZ-NAS's terms, whichever
    regrets least under cross-validation on those students (das.calibrate.selection).

    Args:
        students: how many students to distil; 0 turns calibration off, else at least 3
            (8 beat size on the committed populations). Costs ``students × epochs`` epochs of training.
        epochs: training epochs per student.
        seed: seeds which students are drawn, their initial weights, batch order and the rule's splits.
        train_images: a stratified subset of the search's training images to distil on
            (faster); null uses all of them.
    """

    students: int = 0
    epochs: int = 3
    seed: int = 0
    train_images: int | None = None


@dataclass
class RaceConfig:
    """A finalist race after the zero-cost search: a few students distilled briefly, the best kept.

    The ``finalists`` best-ranked distinct students within the budget, plus always the largest
    within the budget (the size baseline as a guard), are distilled from the teacher on a short
    schedule of ``epochs`` epochs (das.calibrate's recipe, on the search's training images) with
    successive halving judged on the validation split: at each rung only the best ``1/eta`` go
    on (das.calibrate.race). The winner becomes best_arch.json.

    Args:
        finalists: how many of the best-ranked students race besides the largest in budget; 0
            turns the race off, else at least 2.
        epochs: the schedule a finalist trains for if it is never dropped.
        eta: the halving rate (2: half go on at each rung).
        seed: the finalists' initial weights and batch order.
        train_images: a stratified subset of the search's training images to distil on
            (faster); null uses all of them.
    """

    finalists: int = 0
    epochs: int = 5
    eta: int = 2
    seed: int = 0
    train_images: int | None = None
