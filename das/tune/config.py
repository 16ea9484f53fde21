"""The ``tune:`` section of train.py: what the recipe study searches, for how long, checked before any data is read.

Every range is ``[low, high]`` with ``low < high``, or ``null`` to leave that part of the recipe as
``model.*`` configures it. ``low == high`` is an empty range and is refused (``null`` fixes a
value); ``low > high`` is inverted and refused. Each check is one line naming the key, the value
and what is accepted.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from das.distill.losses import LOSSES
from das.distill.objective import FEATURE_INPUTS, PARAMETER_INPUTS
from das.errors import DasError, close_matches_hint

#: Optuna pruners by name: stop a trial whose validation accuracy after an epoch is below the
#: median of the finished trials' at that epoch (Optuna's MedianPruner), successive halving
#: (Li et al., "Hyperband", JMLR 2018; Optuna's SuccessiveHalvingPruner), or never.
PRUNERS = ("median", "halving", "none")
#: The feature pairings a trial may choose (a list of named pairs is not tuned: set model.feature_pairs).
PAIRINGS = ("final", "stages")
#: The anchors by default (docs/decisions.md, the tuner v2): scale 0 (off) and one per decade above the default scale 1.
#: Those the ranges leave out (cosine_scale null, a narrower range, cosine_off false) are dropped, not refused.
DEFAULT_ANCHORS = (0.0, 10.0, 100.0, 1000.0)


def logit_losses() -> list[str]:
    """The registered losses a trial may choose as its teacher logit term: read the teacher's logits, no feature map, no parameter."""
    return [name for name in LOSSES.names()
            if "teacher_logits" in (needs := set(LOSSES.get(name).needs)) and not needs & (FEATURE_INPUTS | PARAMETER_INPUTS)]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class TuneConfig:
    """A study of the distillation recipe on the validation split before the final run (off unless ``trials`` > 0).

    Args:
        trials: recipes to try (finished trials, pruned and diverged ones included); 0 turns tuning
            off. A study already holding them is read back, not run again.
        epochs: epochs of each trial's short distillation (the final run's schedule compressed
            into them: warmup and milestones scaled by epochs / trainer.max_epochs).
        train_images: train each trial on a stratified, seeded subset of this many training
            images; null: all of them.
        seed: seed of the sampler, of the subset and of every trial's batch order; every trial
            starts from the same initial student weights.
        pruner: none (every trial runs its epochs: with the number of trials fixed, pruning lowers
            the cost, not the regret), median (stop a trial below the median of finished trials at
            the same epoch) or halving (successive halving).
        logit_losses: the teacher logit losses a trial may choose from (registered names that
            read the teacher's logits: kd, dkd).
        logit_weight: range of the logit loss's share of the logit terms (the KD weight): the
            trial's losses are ce (1 - w) and the logit loss (w), times model.losses' own total
            of the two; strictly inside (0, 1), since the baseline trains on ce.
        temperature: range of the logit loss's temperature (for a loss that has one).
        cosine_scale: range of the cosine feature loss's scale, drawn log-uniformly; null keeps
            model.losses' cosine term as written (and ignores cosine_off).
        cosine_off: trials may also leave the cosine term out (scale 0).
        feature_pairs: the pairings a trial with a feature loss may choose, from final and
            stages; null keeps model.feature_pairs.
        lr_factor: range of the learning rate as multiples of model.lr, drawn log-uniformly
            (so the same range suits SGD and AdamW); null keeps model.lr.
        anchors: cosine scales tried as fixed trials right after the configured recipe, each the
            configured recipe with only the cosine scale changed (0: the cosine term off); a
            grid over the one setting that moved accuracy most in the measured pairs, so a few
            trials cover its range whatever the sampler draws. Fixed trials are never pruned.
            null or []: none. The defaults outside the cosine ranges are dropped.
        refine: trials after the anchors that bisect the cosine scale (on a log scale) between the
            best-scoring scale of the configured recipe's line (trial 0, the anchors, earlier
            refinements) and its better-scoring neighbour, the rest of the recipe as configured;
            they stop early once a midpoint would lie within a factor 1.2 of a scale already
            tried (das.tune.study.REFINE_MIN_RATIO). Later trials are drawn by TPE. Refinement
            trials are never pruned.
            0: none; without a cosine_scale range there is nothing to refine. The default, 4, is
            the tuner v3's (docs/decisions.md).
        views: fixed augmented views of each training image in the trials' teacher cache
            (data.augment's crops and flips); 1: the images as loaded, unaugmented.
        switch_z: the best trial replaces the configured recipe (trial 0) only when its validation
            accuracy beats the configured one's by more than this many standard errors of the
            difference of two proportions on the validation images (docs/decisions.md: the
            switching guard, the default by its rule); 0: the best trial always wins.
        only: run the study and write its outputs, but not the final run: a second process
            sharing the study (see docs/guide.md, "Tuning the recipe").
        tuned_for: written by train.py into tuned.yaml: the student and teacher the recipe was
            tuned for; a run of another student or teacher with tune.trials 0 is refused.
    """

    trials: int = 0
    epochs: int = 5
    train_images: int | None = None
    seed: int = 0
    pruner: str = "none"
    logit_losses: list[str] = field(default_factory=lambda: ["kd"])
    logit_weight: list[float] | None = field(default_factory=lambda: [0.1, 0.9])
    temperature: list[float] | None = field(default_factory=lambda: [1.0, 8.0])
    cosine_scale: list[float] | None = field(default_factory=lambda: [0.1, 1000.0])
    cosine_off: bool = True
    feature_pairs: list[str] | None = field(default_factory=lambda: list(PAIRINGS))
    lr_factor: list[float] | None = field(default_factory=lambda: [0.25, 4.0])
    anchors: list[float] | None = field(default_factory=lambda: list(DEFAULT_ANCHORS))
    refine: int = 4
    views: int = 1
    switch_z: float = 1.645
    only: bool = False
    tuned_for: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not _integer(self.trials) or self.trials < 0:
            raise DasError(f"tune.trials={self.trials!r} must be an integer >= 0: the recipes to try (0 turns tuning off)")
        if not self.on:
            return
        if not _integer(self.epochs) or self.epochs < 1:
            raise DasError(f"tune.epochs={self.epochs!r} must be an integer >= 1: the epochs of each trial's short distillation")
        if self.train_images is not None and (not _integer(self.train_images) or self.train_images < 2):
            raise DasError(f"tune.train_images={self.train_images!r} must be an integer >= 2, or null for all the training images")
        if not _integer(self.seed):
            raise DasError(f"tune.seed={self.seed!r} must be an integer")
        if self.pruner not in PRUNERS:
            raise DasError(f"tune.pruner={self.pruner!r} is not a pruner: {close_matches_hint(str(self.pruner), PRUNERS)}")
        if not _number(self.switch_z) or self.switch_z < 0:
            shown = f"{self.switch_z:g}" if _number(self.switch_z) else repr(self.switch_z)
            raise DasError(f"tune.switch_z={shown} must be a finite number >= 0 (standard errors; 0: the best trial always wins)")
        if not _integer(self.views) or self.views < 1:
            raise DasError(f"tune.views={self.views!r} must be an integer >= 1 (1: the images as loaded)")
        self._check_choices("logit_losses", self.logit_losses, logit_losses(), nullable=False)
        self._check_choices("feature_pairs", self.feature_pairs, PAIRINGS, nullable=True)
        self._check_range("logit_weight", 0.0, 1.0, "strictly between 0 and 1 (ce takes the rest, and the baseline trains on ce)", upper=True)
        self._check_range("temperature", 0.0, math.inf, "> 0")
        self._check_range("cosine_scale", 0.0, math.inf, "> 0 (drawn log-uniformly; cosine_off: true adds scale 0)")
        self._check_range("lr_factor", 0.0, math.inf, "> 0 (multiples of model.lr, drawn log-uniformly)")
        if not isinstance(self.cosine_off, bool):
            raise DasError(f"tune.cosine_off={self.cosine_off!r} must be true or false")
        self._check_anchors()
        if not _integer(self.refine) or self.refine < 0:
            raise DasError(f"tune.refine={self.refine!r} must be an integer >= 0: trials that refine the cosine scale after the anchors (0: none)")
        if not (len(self.logit_losses) > 1 or (self.feature_pairs and len(self.feature_pairs) > 1)
                or any(getattr(self, k) is not None for k in ("logit_weight", "temperature", "cosine_scale", "lr_factor"))):
            raise DasError(f"tune.trials={self.trials} but nothing is tuned: every range is null and every list has one choice; "
                           "give a range (e.g. --tune.lr_factor [0.25,4]) or set tune.trials 0")
        if self.tuned_for is not None and not isinstance(self.tuned_for, dict):
            raise DasError(f"tune.tuned_for={self.tuned_for!r} must be a mapping (train.py writes it into tuned.yaml), or null")

    @property
    def on(self) -> bool:
        return self.trials > 0

    def _check_choices(self, key: str, value: Any, accepted: list[str] | tuple[str, ...], nullable: bool) -> None:
        if value is None and nullable:
            return
        null = ", or null to keep model." + key if nullable else ""
        if not isinstance(value, list) or not value:
            raise DasError(f"tune.{key}={value!r} must be a non-empty list from {', '.join(accepted)}{null}")
        for name in value:
            if name not in accepted:
                hint = close_matches_hint(str(name), accepted)
                what = "is not a registered loss that reads the teacher's logits" if key == "logit_losses" else "is not a pairing"
                raise DasError(f"tune.{key}: {name!r} {what}: {hint}")
        if len(set(value)) != len(value):
            raise DasError(f"tune.{key}={value!r} names a choice twice; give each once")

    def _check_range(self, key: str, low_bound: float, high_bound: float, accepted: str, upper: bool = False) -> None:
        value = getattr(self, key)
        if value is None:
            return
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_number(v) for v in value):
            raise DasError(f"tune.{key}={value!r} must be a range [low, high] of two finite numbers, or null to leave it as model.* sets it")
        low, high = (float(v) for v in value)
        if low > high:
            raise DasError(f"tune.{key}=[{low:g}, {high:g}] is inverted: give [low, high] with low < high, e.g. [{high:g}, {low:g}]")
        if low == high:
            raise DasError(f"tune.{key}=[{low:g}, {high:g}] is an empty range: give low < high, or null to keep the model's value")
        if not low > low_bound or (upper and not high < high_bound):
            raise DasError(f"tune.{key}=[{low:g}, {high:g}]: both ends must be {accepted}")
        setattr(self, key, [low, high])

    def _check_anchors(self) -> None:
        anchors = self.anchors
        if isinstance(anchors, (list, tuple)) and tuple(anchors) == DEFAULT_ANCHORS:  # the defaults: keep those the ranges hold
            low, high = self.cosine_scale or (math.inf, -math.inf)
            anchors = [a for a in anchors if (a == 0 and self.cosine_off and self.cosine_scale is not None) or low <= a <= high]
        if anchors is None or len(anchors) == 0:
            self.anchors = None
            return
        if not isinstance(anchors, (list, tuple)) or not all(_number(a) and a >= 0 for a in anchors):
            raise DasError(f"tune.anchors={anchors!r} must be a list of cosine scales >= 0 (0: the cosine term off), or null for none")
        if self.cosine_scale is None:
            raise DasError(f"tune.anchors={list(anchors)!r} needs a tune.cosine_scale range: anchors are cosine scales, "
                           "and cosine_scale null leaves the scale as model.losses sets it")
        low, high = self.cosine_scale
        for a in anchors:
            if a == 0 and not self.cosine_off:
                raise DasError("tune.anchors holds 0 (the cosine term off) but tune.cosine_off is false; set cosine_off true or drop the 0")
            if a != 0 and not low <= a <= high:
                raise DasError(f"tune.anchors: {a:g} is outside tune.cosine_scale [{low:g}, {high:g}]; give anchors inside the range, or 0 for off")
        if len(set(anchors)) != len(anchors):
            raise DasError(f"tune.anchors={list(anchors)!r} names a scale twice; give each once")
        self.anchors = [float(a) for a in anchors]

    def study_settings(self) -> dict[str, Any]:
        """The settings that change what a trial computes (not how many trials, nor what happens after).

        ``anchors`` and ``refine`` are left out when there are none, so a study made before the options existed reads back.
        """
        skip = {"trials", "only", "tuned_for", "switch_z", *(() if self.anchors else ("anchors",)), *(() if self.refine else ("refine",))}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
