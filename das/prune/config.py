"""The ``prune:`` section of prune.py: which pruning, with which settings, checked before any data is read.

Two modes share one section. An at-init method (``px``, ``snip``, ``synflow``, ``magnitude``,
``random``: :data:`das.prune.SALIENCIES`) masks weights of the fresh student and trains it with the
masks fixed; ``slim`` (network slimming, Liu et al., ICCV 2017) removes BatchNorm channels of a
trained network and fine-tunes or distils what is left. Each option belongs to one mode, and an
option set for the other mode is refused rather than ignored, so a config never says more than
the run does: the options of one mode default to ``None`` for that reason.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from das.errors import DasError, close_matches_hint
from das.prune.at_init import check_density
from das.prune.registry import SALIENCIES
from das.prune.slim import SlimConfig

SLIM = "slim"
#: Liu et al.'s λ for VGG and ResNet on CIFAR (their 1e-5 was for DenseNet).
DEFAULT_BN_L1 = 1e-4

_AT_INIT_ONLY = ("density", "rounds")
_SLIM_ONLY = ("ratio", "threshold", "sparse_epochs", "bn_l1", "distill")


@dataclass
class PruneConfig:
    """What prune.py does to the student before it trains it.

    Args:
        method: an at-init method (px, snip, synflow, magnitude, random: unstructured masks on
            the initialised student, kept fixed through training) or slim (remove the BatchNorm
            channels of smallest |γ| from a trained network, then fine-tune or distil it).
        density: at-init: the fraction of conv/linear weights kept, strictly between 0 and 1 (0.05 keeps 5%).
        scope: global (one ranking over the whole network) or layer (every layer pruned alike);
            for slim, layer means every channel group loses ``ratio`` of its channels.
        rounds: at-init: rounds of the exponential density schedule; null: the method's own
            (px and synflow 100, the others 1).
        probe_batches: at-init: batches of training images the saliency reads (px and snip; the
            data-free methods read none).
        probe_batch_size: at-init: images per probe batch.
        seed: at-init: seed of the probe images and of the method's own draws (random, snip).
        ratio: slim: the fraction of BatchNorm channels removed, strictly between 0 and 1.
        threshold: slim, instead of ratio: remove every channel whose |γ| is below it (global only).
        multiple: slim: kept channel counts are rounded up to a multiple of it (8 suits GPUs; 1 for none).
        checkpoint: weights the student starts from, loaded strictly: slim's trained network to
            slim; at-init methods prune a fresh initialisation, so there it is normally null.
        sparse_epochs: slim: epochs of sparse training (the losses plus bn_l1, no teacher) before
            slimming; 0 slims the checkpoint as it is.
        bn_l1: slim with sparse_epochs > 0: λ of the L1 penalty on BatchNorm γ; null: 1e-4 (Liu et al.).
        distill: slim: distil the slimmed network from the unpruned one (null or true) or fine-tune
            it alone on the label terms (false). At-init methods distil from model.teacher when set.
    """

    method: str = "px"
    density: float | None = None
    scope: Literal["global", "layer"] = "global"
    rounds: int | None = None
    probe_batches: int = 1
    probe_batch_size: int = 64
    seed: int = 0
    ratio: float | None = None
    threshold: float | None = None
    multiple: int = 1
    checkpoint: str | None = None
    sparse_epochs: int | None = None
    bn_l1: float | None = None
    distill: bool | None = None

    def __post_init__(self) -> None:
        methods = [*SALIENCIES.names(), SLIM]
        if self.method not in methods:
            raise DasError(f"prune.method={self.method!r} is not a pruning method: {close_matches_hint(str(self.method), methods)}")
        others = _SLIM_ONLY if self.at_init else _AT_INIT_ONLY
        for key in others:
            if getattr(self, key) is not None:
                mode = "slim" if self.at_init else "the at-init methods"
                raise DasError(f"prune.{key}={getattr(self, key)!r} is an option of {mode}, not of prune.method={self.method}; drop it")
        if self.at_init:
            self._check_at_init()
        else:
            self._check_slim()
        if self.checkpoint is not None and not Path(self.checkpoint).expanduser().is_file():
            raise DasError(
                f"prune.checkpoint={self.checkpoint!r} does not exist; give the weights file of model.student, or null "
                "(the quickstart's, runs/quickstart/teacher/teacher.pt, is written by python search.py)"
            )

    @property
    def at_init(self) -> bool:
        """Whether this is pruning at initialisation (masks), not slimming (channels)."""
        return self.method != SLIM

    @property
    def sparse_lambda(self) -> float:
        """The λ of sparse training."""
        return DEFAULT_BN_L1 if self.bn_l1 is None else self.bn_l1

    @property
    def distills(self) -> bool:
        """slim: whether the slimmed network is distilled from the unpruned one."""
        return self.distill is not False

    def slim_config(self) -> SlimConfig:
        """The channel selection (slim only)."""
        return SlimConfig(ratio=self.ratio, threshold=self.threshold, scope=self.scope, multiple=self.multiple)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _check_at_init(self) -> None:
        if self.density is None:
            raise DasError(f"prune.density is not set: give the fraction of weights {self.method} keeps, e.g. --prune.density 0.05")
        try:
            self.density = check_density(self.density)
        except DasError as err:
            raise DasError(f"prune.{err}") from None
        for key in ("probe_batches", "probe_batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DasError(f"prune.{key}={value!r} must be an integer >= 1")
        if self.rounds is not None and (isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1):
            raise DasError(f"prune.rounds={self.rounds!r} must be an integer >= 1 (rounds of the exponential schedule), or null for the method's own")
        if self.multiple != 1:
            raise DasError(f"prune.multiple={self.multiple!r} rounds slim's channel counts; the at-init methods mask single weights, so drop it")

    def _check_slim(self) -> None:
        try:
            self.slim_config()
        except DasError as err:
            raise DasError(f"prune.{err}") from None
        epochs = 0 if self.sparse_epochs is None else self.sparse_epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise DasError(f"prune.sparse_epochs={self.sparse_epochs!r} must be an integer >= 0 (0: slim the checkpoint as it is)")
        self.sparse_epochs = epochs
        if self.bn_l1 is not None:
            if epochs == 0:
                raise DasError(f"prune.bn_l1={self.bn_l1!r} is the sparse training's λ, but prune.sparse_epochs is 0; set prune.sparse_epochs or drop bn_l1")
            if isinstance(self.bn_l1, bool) or not isinstance(self.bn_l1, (int, float)) or not (math.isfinite(self.bn_l1) and self.bn_l1 >= 0):
                raise DasError(f"prune.bn_l1={self.bn_l1!r} must be a finite number >= 0 (Liu et al. use 1e-4)")
        if self.checkpoint is None and epochs == 0:
            raise DasError("slim needs a trained network: give prune.checkpoint (its weights) or prune.sparse_epochs > 0 to train it here first")
        for key in ("probe_batches", "probe_batch_size", "seed"):
            if getattr(self, key) != getattr(PruneConfig, key):
                raise DasError(f"prune.{key} is an option of the at-init methods, not of prune.method=slim; drop it")
