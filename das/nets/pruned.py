"""Pruned networks as files: a spec (the unpruned network and Torch-Pruning's history) plus weights.

A file is data, never code: :class:`PrunedSpec` names the unpruned network (a
:func:`das.models.build_model` spec) and Torch-Pruning's pruning history (which channels of which
group were removed, in order, Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR
2023); :func:`load_pruned` rebuilds the base, replays the history and loads the weights strictly
with ``weights_only=True``, so a file stays loadable when das's classes move. Network slimming
(:mod:`das.prune.slim`) writes such files; :mod:`das.models` reads them, so a pruned network is
a student (or teacher) spec like any other. The unpruned network is built by a function passed
in (``build_base``), because the model registry that builds it sits above this module.

Option-A shortcuts. The CIFAR ResNets' parameter-free shortcut (:class:`PadShortcut`) zero-pads
the channels of one stage into the wider next one, which Torch-Pruning would mistake for an
element-wise op; before pruning (and before replaying a history) every PadShortcut is replaced
by an :class:`IndexShortcut` with the same outputs that Torch-Pruning prunes through its own
pruner (:class:`IndexShortcutPruner`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from das.errors import DasError
from das.features import FeaturePoint, FeatureTap
from das.nets.cifar_resnet import PadShortcut
from das.nets.tracing import DeclaredPoints
from das.spec import ArchSpec
from das.nets.checkpoint import check_fits

#: The marker and format version of a saved pruned network.
FORMAT = "das.prune.slim/1"


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


def plain_history(history: Sequence[Sequence[Any]]) -> tuple[tuple[str, bool, tuple[int, ...]], ...]:
    """The history as plain values (str, bool, ints), so it saves as JSON and loads with ``weights_only=True``."""
    return tuple((str(name), bool(out), tuple(int(i) for i in idxs)) for name, out, idxs in history)


def measure_feature_points(model: nn.Module, input_size: tuple[int, ...]) -> None:
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
        object.__setattr__(self, "history", plain_history(self.history))

    def build(self, build_base: Callable[[str, int], nn.Module]) -> nn.Module:
        """The pruned network with freshly initialised weights (load a state dict into it).

        Args:
            build_base: builds the unpruned network from ``base`` and ``num_classes``
                (:func:`das.models.build_model`, which sits above this module).
        """
        model = index_shortcuts(build_base(self.base, self.num_classes), self.input_size)
        graph = dependency_graph(model, self.input_size)
        graph.load_pruning_history([[name, out, list(idxs)] for name, out, idxs in self.history])
        measure_feature_points(model, self.input_size)
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


def load_pruned(path: str | Path, build_base: Callable[[str, int], nn.Module], num_classes: int | None = None) -> nn.Module:
    """The pruned network saved at ``path``, with its weights: the same outputs as the network that was saved.

    Args:
        path: a file written by :func:`save_pruned`.
        build_base: builds the unpruned network from its spec and class count (:func:`das.models.build_model`).
        num_classes: when given, must be the saved network's.

    Raises:
        DasError: a missing file, a file that is not a pruned network, or another class count.
    """
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
    model = spec.build(build_base)
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
