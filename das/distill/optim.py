"""Optimisers and learning-rate schedules for training a student, chosen by name from config.

Two registries, so a config names them and a user can add one with a decorator:

- :data:`OPTIMIZERS`: ``sgd`` (momentum, Nesterov by default) and ``adamw`` (Loshchilov &
  Hutter, "Decoupled Weight Decay Regularization", ICLR 2019).
- :data:`SCHEDULES`: ``cosine`` (annealed to 0 over the run; Loshchilov & Hutter, "SGDR", ICLR
  2017), ``step`` (multiplied by ``gamma`` at each milestone epoch) and ``constant``.

Either schedule may start with a linear warmup over ``warmup_epochs`` (fractions allowed; Goyal
et al., "Accurate, Large Minibatch SGD", 2017). The schedule steps once per optimizer step, so
epochs are converted to steps with the trainer's steps per epoch.

Weight decay is off for normalisation-layer parameters and biases unless
``decay_norm_and_bias``: decaying a BatchNorm scale or a bias only pulls it toward 0 without
regularising the function (Goyal et al. 2017, section 5.1). They are found by module type (any
BatchNorm, InstanceNorm, GroupNorm, LayerNorm, RMSNorm), by the name ``bias``, and, for norm
layers das does not know (e.g. timm's RmsNorm), by being one-dimensional, as timm does.

Every setting is checked when :class:`OptimConfig` is built, so a bad value fails before any
training; only the checks that need the run's length wait for :func:`build_scheduler`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, LRScheduler, MultiStepLR, SequentialLR

from das.errors import DasError
from das.registry import Registry

#: Norm layers whose parameters are never decayed (unless asked). ``_NormBase`` is private but
#: is the one base of every BatchNorm, SyncBatchNorm, InstanceNorm and their lazy variants;
#: ``nn.RMSNorm`` is new in torch 2.4 (das allows 2.3).
NORM_LAYERS: tuple[type[nn.Module], ...] = tuple(
    t for t in (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, getattr(nn, "RMSNorm", None)) if t is not None
)


@dataclass(frozen=True)
class OptimConfig:
    """How to optimise: the optimizer, its settings, the schedule and warmup. Checked on creation.

    The defaults are :class:`~das.distill.module.DistillModule`'s (a test keeps them equal).
    """

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    milestones: tuple[int, ...] | None = None
    gamma: float = 0.1
    decay_norm_and_bias: bool = False

    def __post_init__(self) -> None:
        if self.milestones is not None:
            object.__setattr__(self, "milestones", tuple(self.milestones))
        object.__setattr__(self, "betas", tuple(self.betas))
        OPTIMIZERS.get(self.optimizer)  # an unknown name fails with the close matches
        SCHEDULES.get(self.schedule)
        # Each check is written so that NaN fails it too.
        if not self.lr > 0 or math.isinf(self.lr):
            raise DasError(f"lr={self.lr} must be a finite number > 0 (the peak learning rate, e.g. 0.05 for SGD, 1e-3 for AdamW)")
        if not 0 <= self.weight_decay < math.inf:
            raise DasError(f"weight_decay={self.weight_decay} must be a finite number >= 0 (0 turns it off)")
        if not 0 <= self.momentum < 1:
            raise DasError(f"momentum={self.momentum} must be in [0, 1) (0 is plain SGD; 0.9 is usual)")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise DasError(f"betas={list(self.betas)} must be two numbers in [0, 1), e.g. [0.9, 0.999]")
        if not 0 <= self.warmup_epochs < math.inf:
            raise DasError(f"warmup_epochs={self.warmup_epochs} must be a finite number >= 0 (epochs of linear warmup; fractions allowed, 0 for none)")
        if not 0 < self.gamma <= 1:
            raise DasError(f"gamma={self.gamma} must be in (0, 1] (the factor the step schedule multiplies the LR by at each milestone)")
        self._check_milestones()

    def _check_milestones(self) -> None:
        wants = SCHEDULES.meta(self.schedule).get("milestones", False)
        m = None if self.milestones is None else list(self.milestones)
        if wants and not m:
            raise DasError(f"schedule {self.schedule!r} needs milestones (epochs at which the LR is multiplied by gamma), e.g. --model.milestones [100,150]")
        if not wants and m:
            readers = " or ".join(repr(n) for n in SCHEDULES.names() if SCHEDULES.meta(n).get("milestones"))
            raise DasError(f"milestones={m} apply only to schedule {readers}, not {self.schedule!r}; drop them (--model.milestones null) or change --model.schedule")
        if not m:
            return
        if any(isinstance(e, bool) or not isinstance(e, int) for e in m) or m[0] <= 0 or any(b <= a for a, b in zip(m, m[1:])):
            raise DasError(f"milestones={m} must be strictly increasing whole epochs > 0, e.g. [100, 150]")
        if m[0] <= self.warmup_epochs:
            raise DasError(f"milestones={m} must all come after warmup_epochs={self.warmup_epochs}; move them later or shorten the warmup")


#: name → ``factory(param_groups, config) -> Optimizer``.
OPTIMIZERS: Registry[Callable[[list[dict[str, Any]], OptimConfig], Optimizer]] = Registry("optimizer")

#: name → ``factory(optimizer, config, steps, steps_per_epoch, offset) -> LRScheduler`` for the
#: ``steps`` after a warmup of ``offset`` steps. Meta ``milestones=True``: the schedule reads them.
SCHEDULES: Registry[Callable[..., LRScheduler]] = Registry("LR schedule")


@OPTIMIZERS.register("sgd")
def sgd(groups: list[dict[str, Any]], cfg: OptimConfig) -> Optimizer:
    """SGD with momentum; Nesterov when asked and momentum > 0 (PyTorch refuses it without)."""
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


@OPTIMIZERS.register("adamw")
def adamw(groups: list[dict[str, Any]], cfg: OptimConfig) -> Optimizer:
    """AdamW: weight decay decoupled from the gradient's scaling (each group carries its own)."""
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


@SCHEDULES.register("cosine")
def cosine(optimizer: Optimizer, cfg: OptimConfig, steps: int, steps_per_epoch: float, offset: int) -> LRScheduler:
    """From the peak LR to 0 over the ``steps`` after warmup (PyTorch's own, step-exact on resume)."""
    return CosineAnnealingLR(optimizer, T_max=steps)


@SCHEDULES.register("step", milestones=True)
def step(optimizer: Optimizer, cfg: OptimConfig, steps: int, steps_per_epoch: float, offset: int) -> LRScheduler:
    """The LR times ``gamma`` from each milestone epoch on; milestones count from the run's start."""
    assert cfg.milestones is not None  # OptimConfig requires them for this schedule
    at = [max(1, round(e * steps_per_epoch) - offset) for e in cfg.milestones]
    return MultiStepLR(optimizer, milestones=at, gamma=cfg.gamma)


@SCHEDULES.register("constant")
def constant(optimizer: Optimizer, cfg: OptimConfig, steps: int, steps_per_epoch: float, offset: int) -> LRScheduler:
    """The peak LR throughout (after any warmup)."""
    return ConstantLR(optimizer, factor=1.0, total_iters=0)


def no_decay_ids(modules: Iterable[nn.Module]) -> set[int]:
    """The ids of the norm-layer parameters, biases and other 1-d parameters of ``modules``."""
    ids: set[int] = set()
    for module in modules:
        for sub in module.modules():
            norm = isinstance(sub, NORM_LAYERS)
            ids |= {id(p) for name, p in sub.named_parameters(recurse=False) if norm or name == "bias" or p.ndim <= 1}
    return ids


def param_groups(modules: Iterable[nn.Module], weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict[str, Any]]:
    """The trainable parameters of ``modules`` in order, as [decayed, not decayed] groups (one group if all decay)."""
    modules = list(modules)
    trainable = [p for m in modules for p in m.parameters() if p.requires_grad]
    if decay_norm_and_bias:
        return [{"params": trainable, "weight_decay": weight_decay}]
    skip = no_decay_ids(modules)
    return [
        {"params": [p for p in trainable if id(p) not in skip], "weight_decay": weight_decay},
        {"params": [p for p in trainable if id(p) in skip], "weight_decay": 0.0},
    ]


def build_optimizer(groups: list[dict[str, Any]], cfg: OptimConfig) -> Optimizer:
    """The optimizer ``cfg`` names, over ``groups`` (see :func:`param_groups`)."""
    return OPTIMIZERS.get(cfg.optimizer)(groups, cfg)


def warmup_steps(cfg: OptimConfig, steps_per_epoch: float) -> int:
    """``warmup_epochs`` in optimizer steps: at least one step when any warmup is asked for."""
    return max(1, round(cfg.warmup_epochs * steps_per_epoch)) if cfg.warmup_epochs > 0 else 0


def build_scheduler(optimizer: Optimizer, cfg: OptimConfig, total_steps: int, steps_per_epoch: float) -> LRScheduler:
    """The per-step schedule ``cfg`` names over ``total_steps``, after a linear warmup if one is asked for.

    The warmup goes from ``lr / (W + 1)`` to ``lr`` in ``W`` equal steps, so no step is wasted at LR 0.
    """
    if total_steps < 1:
        raise DasError(f"the LR schedule needs a run of at least one optimizer step, got {total_steps}; raise --trainer.max_epochs or --trainer.max_steps")
    if not math.isfinite(steps_per_epoch) and (cfg.warmup_epochs > 0 or cfg.milestones):
        raise DasError("warmup_epochs and milestones count epochs, but this run's epoch length is unknown (a data set of unknown length); "
                       "set --trainer.max_epochs with --trainer.max_steps, or drop them")
    w = warmup_steps(cfg, steps_per_epoch)
    if w >= total_steps:
        raise DasError(f"warmup_epochs={cfg.warmup_epochs} is {w} optimizer steps but the whole run has {total_steps}; warm up for fewer epochs than trainer.max_epochs")
    main = SCHEDULES.get(cfg.schedule)(optimizer, cfg, total_steps - w, steps_per_epoch, w)
    if w == 0:
        return main  # exactly the schedule alone, no wrapper
    # Built after `main` so the warmup sets the first LR; SequentialLR hands over at step w.
    warmup = LinearLR(optimizer, start_factor=1.0 / (w + 1), end_factor=1.0, total_iters=w)
    return SequentialLR(optimizer, [warmup, main], milestones=[w])


def trainer_steps(trainer: Any) -> tuple[int, float]:
    """(optimizer steps in the run, optimizer steps per epoch) of a Lightning trainer about to fit.

    Steps per epoch come from the train loader, not ``total / max_epochs``: a ``max_steps`` that
    ends the run early must not stretch the epochs that warmup and milestones count.
    """
    total = trainer.estimated_stepping_batches  # also sets up the train loader, so the next line is known
    if not math.isfinite(total):
        raise DasError("the LR schedule needs a run of known length; set --trainer.max_epochs or --trainer.max_steps")
    batches = trainer.num_training_batches
    if math.isfinite(batches):
        per_epoch = float(math.ceil(batches / trainer.accumulate_grad_batches))
    else:  # a data set of unknown length: only the epoch count says
        per_epoch = total / trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else math.inf
    return max(1, int(total)), per_epoch  # as before: a run of no batches still gets a valid schedule
