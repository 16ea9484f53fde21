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

Saving: a spec plus a state dict, not a pickled module. :class:`PrunedSpec` names the unpruned
network (a :func:`das.models.build_model` spec) and Torch-Pruning's pruning history (which
channels of which group were removed, in order); :func:`load_pruned` rebuilds the base, replays
the history and loads the weights strictly with ``weights_only=True``, so a file is data and
never code, and it stays loadable when das's classes move. :func:`das.models.build_model`
reads such a file, so a pruned network is a student (or teacher) spec like any other.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from das.errors import DasError
from das.features import FeaturePoint, FeatureTap
from das.nets.cifar_resnet import PadShortcut
from das.nets.tracing import DeclaredPoints
from das.spec import ArchSpec
from das.stats import count_flops, count_params

#: ``global``: one |γ| cut-off for the whole network; ``layer``: every group loses the same fraction.
Scope = Literal["global", "layer"]
SCOPES: tuple[str, ...] = ("global", "layer")

#: The marker and format version of a saved pruned network.
FORMAT = "das.prune.slim/1"


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


# ----------------------------------------------------------------------------- the option-A shortcut


class IndexShortcut(nn.Module):
    """A parameter-free shortcut: subsample by ``stride``, then output j is input channel ``source[j]`` (zeros where -1).

    He et al.'s option A (:class:`PadShortcut`) is ``source = [-1]*p + [0, ..., C-1] + [-1]*q``.
    Unlike the padding, any channel map survives pruning: removing output channels drops their
    entries; removing input channels turns the entries that read them into zeros (the channel
    is gone) and renumbers the rest.
    """

    def __init__(self, source: Sequence[int], in_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.stride = stride
        self.register_buffer("source", torch.tensor(list(source), dtype=torch.long))

    @classmethod
    def from_pad(cls, pad: PadShortcut, in_channels: int) -> IndexShortcut:
        """The IndexShortcut with ``pad``'s outputs for an input of ``in_channels``."""
        before, after = pad.pad
        return cls([-1] * before + list(range(in_channels)) + [-1] * after, in_channels, pad.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # A zero channel in front, which the entries -1 read (shifted to 0).
        return F.pad(x, (0, 0, 0, 0, 1, 0)).index_select(1, self.source + 1)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {len(self.source)}, stride={self.stride}"


class IndexShortcutPruner(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning's pruner for :class:`IndexShortcut`: inputs and outputs are pruned independently (as a convolution's)."""

    TARGET_MODULES = (IndexShortcut,)

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        removed = set(idxs)
        layer.source = layer.source[[j for j in range(len(layer.source)) if j not in removed]]
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        removed = torch.zeros(layer.in_channels, dtype=torch.bool, device=layer.source.device)
        removed[list(idxs)] = True
        renumbered = torch.where(removed, -1, torch.cumsum(~removed, 0) - 1)
        layer.source = torch.where(layer.source >= 0, renumbered[layer.source.clamp(min=0)], -1)
        layer.in_channels -= len(idxs)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return len(layer.source)

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.in_channels


def index_shortcuts(model: nn.Module, input_size: tuple[int, ...]) -> nn.Module:
    """Replace every :class:`PadShortcut` of ``model`` by the equal :class:`IndexShortcut`, in place.

    One dry forward pass reads each shortcut's input width (PadShortcut does not keep it).
    """
    pads = {name: m for name, m in model.named_modules() if isinstance(m, PadShortcut)}
    if not pads:
        return model
    with FeatureTap(model, list(pads)) as tap, _evaluating(model), torch.no_grad():
        model(_example(model, input_size))
    for name, pad in pads.items():
        out_channels = tap.outputs[name].shape[1]
        in_channels = out_channels - sum(pad.pad)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, IndexShortcut.from_pad(pad, in_channels).to(_device(model)))
    return model


# ----------------------------------------------------------------------------- the dependency graph and the scores


def dependency_graph(model: nn.Module, input_size: tuple[int, ...]) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` (its shortcuts already :func:`index_shortcuts`), traced on one input."""
    was_training = model.training
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=_example(model, input_size), verbose=False,
                customized_pruners={IndexShortcut: IndexShortcutPruner()},
            )
    finally:
        model.train(was_training)  # tracing leaves the model in eval mode


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
    _measure_feature_points(pruned, input_size)
    after_widths = _bn_widths(pruned)
    return Slimmed(
        model=pruned,
        config=config,
        history=_plain_history(graph.pruning_history()),
        input_size=input_size,
        before=before,
        after=NetworkSize(count_params(pruned), count_flops(pruned, input_size)),
        channels={name: (w, after_widths[name]) for name, w in widths.items()},
    )


def _bn_widths(model: nn.Module) -> dict[str, int]:
    return {name: m.num_features for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def _plain_history(history: Sequence[Sequence[Any]]) -> tuple[tuple[str, bool, tuple[int, ...]], ...]:
    """The history as plain values (str, bool, ints), so it saves as JSON and loads with ``weights_only=True``."""
    return tuple((str(name), bool(out), tuple(int(i) for i in idxs)) for name, out, idxs in history)


def _measure_feature_points(model: nn.Module, input_size: tuple[int, ...]) -> None:
    """Redeclare the model's feature points with the channels its pruned layers now output.

    A model's own ``feature_points()`` reports the widths it was built with (CIFAR ResNets read
    them from ``widths``), which pruning changed; projectors and pairings read these numbers.
    """
    declared = getattr(model, "feature_points", None)
    if not callable(declared):
        return  # inferred from a forward pass when needed, so already right
    points: list[FeaturePoint] = list(declared())
    with FeatureTap(model, [p.module for p in points]) as tap, _evaluating(model), torch.no_grad():
        model(_example(model, input_size))
    model.feature_points = DeclaredPoints(tuple(dataclasses.replace(p, channels=int(tap.outputs[p.module].shape[1])) for p in points))


# ----------------------------------------------------------------------------- saving and loading


@dataclass(frozen=True)
class PrunedSpec:
    """What rebuilds a pruned network: the unpruned network's spec and the pruning applied to it.

    Attributes:
        base: a :func:`das.models.build_model` spec of the unpruned network (``resnet56``, an
            ArchSpec, ``package.module:function``, ...); an ArchSpec is kept as its JSON.
        num_classes: classifier outputs.
        input_size: the (C, H, W) the network was traced on (the pruning replays on it).
        history: Torch-Pruning's pruning history: (group root module, output channels?, indices), in order.
    """

    base: str
    num_classes: int
    input_size: tuple[int, ...]
    history: tuple[tuple[str, bool, tuple[int, ...]], ...]

    def __post_init__(self) -> None:
        if isinstance(self.base, ArchSpec):
            object.__setattr__(self, "base", self.base.to_json())
        object.__setattr__(self, "input_size", tuple(int(s) for s in self.input_size))
        object.__setattr__(self, "history", _plain_history(self.history))

    def build(self) -> nn.Module:
        """The pruned network with freshly initialised weights (load a state dict into it)."""
        from das.models import build_model

        model = index_shortcuts(build_model(self.base, self.num_classes), self.input_size)
        graph = dependency_graph(model, self.input_size)
        graph.load_pruning_history([[name, out, list(idxs)] for name, out, idxs in self.history])
        _measure_feature_points(model, self.input_size)
        return model

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "num_classes": self.num_classes, "input_size": list(self.input_size),
                "history": [[name, out, list(idxs)] for name, out, idxs in self.history]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrunedSpec:
        return cls(data["base"], int(data["num_classes"]), tuple(data["input_size"]), tuple(tuple(h) for h in data["history"]))


def save_pruned(path: str | Path, model: nn.Module, spec: PrunedSpec) -> Path:
    """Write ``model`` (pruned as ``spec`` says) as its spec and state dict; :func:`load_pruned` reads it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "spec": spec.to_dict(), "state_dict": model.state_dict()}, path)
    return path


def load_pruned(path: str | Path, num_classes: int | None = None) -> nn.Module:
    """The pruned network saved at ``path``, with its weights: the same outputs as the network that was saved.

    Args:
        path: a file written by :func:`save_pruned`.
        num_classes: when given, must be the saved network's.

    Raises:
        DasError: a missing file, a file that is not a pruned network, or another class count.
    """
    from teachers.checkpoint import check_fits

    path = Path(str(path).strip()).expanduser()
    if not path.is_file():
        raise DasError(f"pruned network {str(path)!r} does not exist; write one with das.prune.slim.save_pruned (or give a teacher spec such as resnet20)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and allow-list errors all mean "not our file"
        raise DasError(f"cannot read pruned network {str(path)!r} with torch.load(weights_only=True): {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    if not isinstance(raw, Mapping) or raw.get("format") != FORMAT:
        raise DasError(f"{str(path)!r} is not a pruned network written by das.prune.slim.save_pruned; a weights file goes in a checkpoint argument next to its architecture's spec")
    spec = PrunedSpec.from_dict(raw["spec"])
    if num_classes is not None and num_classes != spec.num_classes:
        raise DasError(f"pruned network {str(path)!r} has {spec.num_classes} classes, not num_classes={num_classes}; set num_classes to {spec.num_classes}")
    model = spec.build()
    check_fits(model, raw["state_dict"], path)
    model.load_state_dict(raw["state_dict"], strict=True)
    return model


# ----------------------------------------------------------------------------- helpers


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _example(model: nn.Module, input_size: tuple[int, ...]) -> torch.Tensor:
    return torch.zeros(1, *input_size, device=_device(model))


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode (a dry pass must not move BatchNorm statistics), its mode restored afterwards."""
    was_training = model.training
    try:
        yield model.eval()
    finally:
        model.train(was_training)
