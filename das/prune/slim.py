"""Network slimming: remove the BatchNorm channels whose scale γ is small, leaving a smaller network.

Liu et al., "Learning Efficient Convolutional Networks through Network Slimming" (ICCV 2017):
train with an L1 penalty λ·Σ|γ| on every BatchNorm scale (the ``bn_l1`` loss of
:mod:`das.distill.losses`), then remove the channels whose |γ| is small and fine-tune (or, in
das, distil from the unpruned network). Removing a channel resizes every layer that reads or
adds to it; which layers those are is Torch-Pruning's dependency graph (Fang et al., "DepGraph:
Towards Any Structural Pruning", CVPR 2023): the channels joined by a residual addition form one
group, removed from all of its layers together. Hand-written surgery would have to re-derive
that graph for every architecture.

Scores. A group's channel scores the largest |γ| among the group's BatchNorms (Torch-Pruning's
``BNScaleImportance`` with max reduction and no normalisation), so a channel is cut only when
every BatchNorm that scales it has a small γ. Liu et al.'s networks had no such coupling.

Option-A shortcuts. The CIFAR ResNets' parameter-free shortcut (:class:`PadShortcut`) zero-pads
the channels of one stage into the wider next one. Torch-Pruning takes the padding for an
element-wise op and silently couples channel i of one stage with channel i of the next, which
the padding offsets, so it would cut the wrong channels. Before pruning, every PadShortcut is
therefore replaced by an :class:`IndexShortcut` (same outputs) that Torch-Pruning prunes through
its own pruner: the two stages become independent groups, and a channel of the wider stage
that the shortcut feeds from a channel of the narrower one scores at least that channel's
score (it carries it on).

Selection (:class:`SlimConfig`): a ``ratio`` of the channels, over the whole network (one |γ|
cut-off, the paper's percentile) or in every group alike; or an absolute ``threshold`` on |γ|.
Kept counts are rounded up to a ``multiple`` (hardware runs multiples of 8 faster), and never
fall to zero.

What stays exact: a channel whose γ and β are both 0 outputs 0 after its BatchNorm (and ReLU),
so cutting it leaves every kept output unchanged. A channel with γ = 0 but β ≠ 0 outputs a
constant; cutting it shifts the next layer's input by that constant, which fine-tuning absorbs
(das does not fold it into the next layer's bias).

Saving: a spec plus a state dict, not a pickled module (:mod:`das.nets.pruned`, which
:func:`das.models.build_model` reads, so a pruned network is a student (or teacher) spec like
any other). :func:`load_pruned` here builds the unpruned base with :func:`das.models.build_model`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch_pruning as tp
from torch import nn

from das.errors import DasError
from das.models import build_model
from das.nets import pruned as _pruned
from das.nets.pruned import (  # noqa: F401  (save_pruned re-exported: prune.py's slimming writes these files)
    IndexShortcut, IndexShortcutPruner, PrunedSpec, dependency_graph, index_shortcuts, measure_feature_points,
    plain_history, save_pruned,
)
from das.spec import ArchSpec
from das.stats import count_flops, count_params

#: ``global``: one |γ| cut-off for the whole network; ``layer``: every group loses the same fraction.
Scope = Literal["global", "layer"]
SCOPES: tuple[str, ...] = ("global", "layer")

@dataclass(frozen=True)
class SlimConfig:
    """Which channels to remove.

    Args:
        ratio: the fraction of BatchNorm channels to remove, in (0, 1).
        threshold: remove every channel whose score (|γ|) is below it, > 0; global only.
        scope: ``global`` (the ratio's channels are the network's lowest scores) or ``layer``
            (every group loses ``ratio`` of its own channels).
        multiple: kept channel counts are rounded up to a multiple of it (8 suits GPUs); 1 for none.
    """

    ratio: float | None = None
    threshold: float | None = None
    scope: Scope = "global"
    multiple: int = 1

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.threshold is None):
            raise DasError(f"slimming needs exactly one of ratio or threshold, got ratio={self.ratio!r} and threshold={self.threshold!r}")
        if self.ratio is not None and not (_is_number(self.ratio) and 0 < self.ratio < 1):
            raise DasError(f"ratio={self.ratio!r} must be a number in (0, 1): the fraction of BatchNorm channels to remove")
        if self.threshold is not None and not (_is_number(self.threshold) and math.isfinite(self.threshold) and self.threshold > 0):
            raise DasError(f"threshold={self.threshold!r} must be a finite number > 0: channels whose |γ| is below it are removed")
        if self.scope not in SCOPES:
            raise DasError(f"scope={self.scope!r} must be one of {', '.join(SCOPES)}")
        if self.threshold is not None and self.scope != "global":
            raise DasError(f"threshold={self.threshold!r} is one |γ| cut-off for the whole network, so scope must be 'global', got {self.scope!r}; per-layer selection takes a ratio")
        if isinstance(self.multiple, bool) or not isinstance(self.multiple, int) or self.multiple < 1:
            raise DasError(f"multiple={self.multiple!r} must be an integer >= 1 (kept channel counts are rounded up to it; 1 for none)")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- the dependency graph and the scores


@dataclass
class _Group:
    """One group of coupled channels that BatchNorms scale: its root (for pruning) and each channel's score."""

    root: nn.Module
    prune_fn: Any
    scores: torch.Tensor
    items: list[tp.GroupItem]


def _groups(graph: tp.DependencyGraph) -> list[_Group]:
    """The groups a BatchNorm scores, never one whose channels reach the network's output (the logits)."""
    importance = tp.importance.BNScaleImportance(group_reduction="max", normalizer=None)
    groups = []
    for group in graph.get_all_groups(root_module_types=(nn.modules.conv._ConvNd, nn.Linear)):
        if any(item.dep.target.type == tp.ops.OPTYPE.OUTPUT for item in group):
            continue
        scores = importance(group)
        if scores is None:  # no BatchNorm scales these channels
            continue
        # A channel no BatchNorm of the group scales (a branch of a concatenation without one)
        # comes back below 0; γ says nothing about it, so it is never cut.
        scores = torch.where(scores < 0, math.inf, scores.float()).cpu()
        root = group[0].dep
        groups.append(_Group(root.target.module, root.handler, scores, list(group)))
    _carry_through_shortcuts(groups)
    return groups


def _carry_through_shortcuts(groups: list[_Group]) -> None:
    """Raise the score of each channel an IndexShortcut feeds to at least its source channel's score.

    A stream channel of the wider stage carries its source channel on, so cutting it loses that
    channel too. Repeated until nothing changes, for chains of stages.
    """
    sources: dict[tuple[int, int], tuple[_Group, int]] = {}
    feeds: list[tuple[_Group, int, IndexShortcut, int]] = []
    for g in groups:
        for item in g.items:
            layer = item.dep.target.module
            if not isinstance(layer, IndexShortcut):
                continue
            if item.dep.handler.__func__ is IndexShortcutPruner.prune_in_channels:
                sources.update({(id(layer), i): (g, r) for i, r in zip(item.idxs, item.root_idxs)})
            else:
                feeds.extend((g, r, layer, j) for j, r in zip(item.idxs, item.root_idxs))
    changed = True
    while changed:
        changed = False
        for g, r, layer, j in feeds:
            c = int(layer.source[j])
            if c < 0 or (id(layer), c) not in sources:
                continue
            src_group, src_root = sources[(id(layer), c)]
            carried = src_group.scores[src_root]
            if carried > g.scores[r]:
                g.scores[r] = carried
                changed = True


# ----------------------------------------------------------------------------- selection


def _kept(groups: list[_Group], config: SlimConfig) -> list[list[int]]:
    """The channels each group keeps: the highest scores, the counts floored at 1 and rounded up to ``multiple``."""
    if config.threshold is not None:
        finite = torch.cat([g.scores[g.scores.isfinite()] for g in groups])
        best = float(finite.max()) if finite.numel() else math.inf
        if config.threshold > best:
            raise DasError(f"threshold={config.threshold!r} is above every channel's |γ| (the largest is {best:.4g}), so every layer would be cut to its minimum; pick a threshold below {best:.4g}")
        cut = [int((g.scores < config.threshold).sum()) for g in groups]
    elif config.scope == "layer":
        cut = [int(config.ratio * len(g.scores)) for g in groups]
    else:  # one cut-off for the network: the ratio's lowest scores, ties in network order
        everything = torch.cat([g.scores for g in groups])
        owner = torch.cat([torch.full((len(g.scores),), i) for i, g in enumerate(groups)])
        lowest = torch.sort(everything, stable=True).indices[: int(config.ratio * len(everything))]
        cut = torch.bincount(owner[lowest], minlength=len(groups)).tolist()
    kept = []
    for g, n_cut in zip(groups, cut):
        width = len(g.scores)
        count = min(width, math.ceil(max(1, width - n_cut) / config.multiple) * config.multiple)
        order = torch.sort(-g.scores, stable=True).indices
        kept.append(sorted(order[:count].tolist()))
    return kept


# ----------------------------------------------------------------------------- slimming


@dataclass(frozen=True)
class NetworkSize:
    """Trainable parameters and forward FLOPs (one input) of a network."""

    params: int
    flops: int


@dataclass(frozen=True)
class Slimmed:
    """A slimmed network and what was done to it.

    Attributes:
        model: the pruned network (a copy, trainable; the network given to :func:`slim` is left as it was).
        config: the selection that was applied.
        history: Torch-Pruning's pruning history, as :class:`PrunedSpec` stores it.
        input_size: the (C, H, W) it was traced and measured on.
        before: size of the unpruned network.
        after: size of the pruned one.
        channels: each BatchNorm's channels, before and after.
    """

    model: nn.Module
    config: SlimConfig
    history: tuple[tuple[str, bool, tuple[int, ...]], ...]
    input_size: tuple[int, ...]
    before: NetworkSize
    after: NetworkSize
    channels: dict[str, tuple[int, int]]

    def spec(self, base: str | ArchSpec, num_classes: int) -> PrunedSpec:
        """The :class:`PrunedSpec` of this network, pruned from ``base`` (the spec that built the unpruned one)."""
        return PrunedSpec(base, num_classes, self.input_size, self.history)

    def report(self) -> dict[str, Any]:
        """The selection, and params, FLOPs and channels before and after, as JSON-able values."""
        kept = sum(after for _, after in self.channels.values())
        total = sum(before for before, _ in self.channels.values())
        return {
            "config": dataclasses.asdict(self.config),
            "params": {"before": self.before.params, "after": self.after.params, "ratio": self.after.params / self.before.params},
            "flops": {"before": self.before.flops, "after": self.after.flops, "ratio": self.after.flops / max(1, self.before.flops)},
            "bn_channels": {"before": total, "after": kept, "removed_fraction": 1 - kept / max(1, total)},
            "layers": {name: {"before": b, "after": a} for name, (b, a) in self.channels.items()},
        }


def slim(model: nn.Module, config: SlimConfig, input_size: tuple[int, ...] = (3, 32, 32)) -> Slimmed:
    """A copy of ``model`` with the channels ``config`` selects by BatchNorm γ removed, every dependent layer resized.

    Args:
        model: a network with BatchNorm layers (after sparse training with ``bn_l1``, ideally).
        config: which channels to remove.
        input_size: (C, H, W) of one input, to trace the network and count its FLOPs.

    Raises:
        DasError: a network with no BatchNorm channels to remove, or a threshold above every |γ|.
    """
    input_size = tuple(input_size)
    # Trainable, for fine-tuning, and because the graph is traced through autograd: a frozen
    # teacher's copy would trace to nothing. Sizes are the copy's, so a frozen network counts too.
    pruned = copy.deepcopy(model).requires_grad_(True)
    before = NetworkSize(count_params(pruned), count_flops(pruned, input_size))
    pruned = index_shortcuts(pruned, input_size)
    widths = _bn_widths(pruned)
    graph = dependency_graph(pruned, input_size)
    groups = _groups(graph)
    if not groups:
        raise DasError(f"{type(model).__name__} has no BatchNorm channels to remove (network slimming scores channels by the γ of a BatchNorm after a convolution)")
    # Selected on one snapshot of the scores: the groups' output channels are disjoint, so
    # pruning one group leaves the indices of the others valid.
    for g, keep in zip(groups, _kept(groups, config)):
        drop = sorted(set(range(len(g.scores))) - set(keep))
        if drop:
            graph.get_pruning_group(g.root, g.prune_fn, drop).prune()
    measure_feature_points(pruned, input_size)
    after_widths = _bn_widths(pruned)
    return Slimmed(
        model=pruned,
        config=config,
        history=plain_history(graph.pruning_history()),
        input_size=input_size,
        before=before,
        after=NetworkSize(count_params(pruned), count_flops(pruned, input_size)),
        channels={name: (w, after_widths[name]) for name, w in widths.items()},
    )


def _bn_widths(model: nn.Module) -> dict[str, int]:
    return {name: m.num_features for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def load_pruned(path: str | Path, num_classes: int | None = None) -> nn.Module:
    """The pruned network saved at ``path`` (:func:`das.nets.pruned.load_pruned`, its base built by :func:`das.models.build_model`)."""
    return _pruned.load_pruned(path, build_model, num_classes)
