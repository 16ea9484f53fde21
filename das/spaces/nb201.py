"""The NAS-Bench-201 cell search space.

NAS-Bench-201 (Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural
Architecture Search", ICLR 2020) trained every one of its 15,625 cells on CIFAR-10, CIFAR-100
and ImageNet16-120. das uses it as the student space because a zero-cost ranking can then be
checked against real accuracies (``shared/data/nb201``), which is why the network here is built
exactly as the benchmark builds it (xautodl's ``TinyNetwork`` with ``InferCell``): same ops, same
BatchNorm settings, same macro skeleton, and therefore the same parameter counts.

A cell is a DAG on 4 nodes whose 6 edges (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2) each carry one of
five ops; node j is the sum of its incoming edges and node 3 is the cell output. The network is

    stem (3x3 conv + BN) -> N cells at C -> reduction block -> N cells at 2C
    -> reduction block -> N cells at 4C -> BN + ReLU -> global average pool -> Linear

with the benchmark's C=16, N=5. Module names follow xautodl (``stem``, ``cells.i.layers.k``,
``conv_a``/``conv_b``/``downsample``, ``lastact``, ``classifier``) so the state_dict keys of a
benchmark checkpoint line up with ours.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import optuna
import torch
from torch import nn

from das.errors import DasError, close_matches_hint
from das.features import FeaturePoint
from das.spaces.base import SearchSpace
from das.spaces.registry import register_space
from das.spec import ArchSpec

#: The five candidate ops, in the benchmark's own order.
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

#: The six edges as (target node, source node), in arch-string order.
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))

#: NASLib's op numbering (NAS-Bench-Suite-Zero keys its data by tuples of these indices).
NASLIB_OPS: tuple[str, ...] = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")

# NASLib orders edges by source node, (1,2),(1,3),(1,4),(2,3),(2,4),(3,4) in its 1-based node
# numbering, while arch strings order them by target: arch edge k is NASLib position _NASLIB_POS[k].
_NASLIB_POS: tuple[int, ...] = (0, 1, 3, 2, 4, 5)

_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


# --------------------------------------------------------------------------- arch strings


def parse_arch(arch: str) -> tuple[str, ...]:
    """The six ops of an arch string such as ``|nor_conv_3x3~0|+|...~0|...~1|+|...|``, in EDGES order."""
    if not isinstance(arch, str):
        raise DasError(f"an NB201 arch must be a string like {_EXAMPLE!r}, got {arch!r}")
    nodes = arch.strip().split("+")
    if len(nodes) != 3:
        raise DasError(
            f"NB201 arch {arch!r} has {len(nodes)} '+'-separated nodes, expected 3 "
            f"(node 1, 2 and 3), e.g. {_EXAMPLE!r}"
        )
    ops: list[str] = []
    for target, node in enumerate(nodes, start=1):
        if len(node) < 2 or not (node.startswith("|") and node.endswith("|")):
            raise DasError(f"node {target} of NB201 arch {arch!r} must be wrapped in '|', e.g. {_EXAMPLE!r}")
        edges = node[1:-1].split("|")
        if len(edges) != target:
            raise DasError(
                f"node {target} of NB201 arch {arch!r} has {len(edges)} inputs, expected {target} "
                f"('op~0' up to 'op~{target - 1}'), e.g. {_EXAMPLE!r}"
            )
        for source, edge in enumerate(edges):
            op, sep, src = edge.rpartition("~")
            if not sep or src != str(source):
                raise DasError(
                    f"edge {edge!r} of node {target} in NB201 arch {arch!r} should read 'op~{source}' "
                    "(inputs are listed in order 0, 1, 2)"
                )
            ops.append(_check_op(op, repr(arch)))
    return tuple(ops)


def arch_string(ops: Sequence[str]) -> str:
    """The arch string of six ops given in EDGES order (the inverse of :func:`parse_arch`)."""
    ops = tuple(ops)
    if len(ops) != len(EDGES):
        raise DasError(f"an NB201 cell has {len(EDGES)} edges, got {len(ops)} ops: {ops!r}")
    for op in ops:
        _check_op(op, repr(ops))
    nodes: list[list[str]] = [[], [], []]
    for (target, source), op in zip(EDGES, ops):
        nodes[target - 1].append(f"{op}~{source}")
    return "+".join("|" + "|".join(node) + "|" for node in nodes)


def from_naslib_tuple(t: Sequence[int] | str) -> str:
    """The arch string of a NASLib op-index tuple such as ``(0, 2, 3, 2, 3, 1)`` (or its str)."""
    indices = t
    if isinstance(t, str):
        try:
            indices = ast.literal_eval(t)
        except (ValueError, SyntaxError):
            raise DasError(f"{t!r} is not a NASLib op tuple such as '(0, 2, 3, 2, 3, 1)'") from None
    try:
        indices = tuple(int(i) for i in indices)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise DasError(f"{t!r} is not a NASLib op tuple such as '(0, 2, 3, 2, 3, 1)'") from None
    if len(indices) != len(EDGES) or not all(0 <= i < len(NASLIB_OPS) for i in indices):
        raise DasError(
            f"a NASLib NB201 tuple has {len(EDGES)} op indices in 0..{len(NASLIB_OPS) - 1} "
            f"({', '.join(f'{i}={op}' for i, op in enumerate(NASLIB_OPS))}), got {t!r}"
        )
    return arch_string([NASLIB_OPS[indices[pos]] for pos in _NASLIB_POS])


def to_naslib_tuple(arch: str) -> tuple[int, ...]:
    """The NASLib op-index tuple of an arch string (the inverse of :func:`from_naslib_tuple`)."""
    ops = parse_arch(arch)
    out = [0] * len(EDGES)
    for k, pos in enumerate(_NASLIB_POS):
        out[pos] = NASLIB_OPS.index(ops[k])
    return tuple(out)


def isomorph_key(arch: str) -> str:
    """The benchmark's isomorphism key of a cell, as in the ``isomorph_key`` column of the data.

    This reproduces NAS-Bench-201's ``CellStructure.to_unique_str(consider_zero=True)`` so that
    scores cached under this key line up with the benchmark's grouping of its 15,625 cells. Each
    node gets an expression: node 0 is ``0``; an edge is ``#`` (zero) when its op is ``none`` or
    its source node's expression is exactly ``#``, the source's expression when it is a skip, and
    ``(source)@op`` otherwise; a node joins its edges' expressions, sorted as strings, with
    ``+``. The key is node 3's expression.

    Equal keys mean equal functions up to one convention of the benchmark: an op fed by an
    all-zero node counts as zero, although a conv's BatchNorm then outputs its learned bias. The
    key is conservative the other way: zero terms are kept and nested sums are not flattened,
    so some cells computing the same function (``#+0`` and ``0``) still get different keys.
    """
    ops = parse_arch(arch)
    exprs = ["0"]
    for target in (1, 2, 3):
        terms = []
        for (t, source), op in zip(EDGES, ops):
            if t != target:
                continue
            if op == "none" or exprs[source] == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(exprs[source])
            else:
                terms.append(f"({exprs[source]})@{op}")
        exprs.append("+".join(sorted(terms)))
    return exprs[3]


def _check_op(op: str, arch: str) -> str:
    if op not in OPS:
        hint = close_matches_hint(op, OPS)
        hint = f" ({hint})" if hint.startswith("did you mean") else ""
        raise DasError(f"unknown op {op!r} in NB201 arch {arch}{hint}; accepted ops: {', '.join(OPS)}")
    return op


# --------------------------------------------------------------------------- network


class ReLUConvBN(nn.Module):
    """ReLU -> Conv (no bias: BN follows) -> BN, the benchmark's ``nor_conv_kxk``."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            # Not inplace: a node's input feeds several edges and may be tapped by a hook.
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(C_out, affine=True, track_running_stats=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Zero(nn.Module):
    """The ``none`` op: an all-zero map, kept in the graph so device, dtype and shape follow x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class AvgPool(nn.Module):
    """The ``avg_pool_3x3`` op; padding is not counted so border pixels are plain means."""

    def __init__(self) -> None:
        super().__init__()
        self.op = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def make_op(op: str, C: int) -> nn.Module:
    """One cell edge at width C (inside cells every edge keeps C channels and the stride 1)."""
    if op == "none":
        return Zero()
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(C, C, 1, 1)
    if op == "nor_conv_3x3":
        return ReLUConvBN(C, C, 3, 1)
    if op == "avg_pool_3x3":
        return AvgPool()
    raise DasError(f"unknown NB201 op {op!r}; accepted ops: {', '.join(OPS)}")


class Cell(nn.Module):
    """One NB201 cell: node j sums its incoming edges; node 3 is the output."""

    def __init__(self, ops: Sequence[str], C: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(make_op(op, C) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for target in (1, 2, 3):
            nodes.append(
                sum(layer(nodes[source]) for layer, (t, source) in zip(self.layers, EDGES) if t == target)
            )
        return nodes[3]


class ResNetBlock(nn.Module):
    """The fixed reduction block between stages: a ResNet basic block, C_in -> C_out, stride 2."""

    def __init__(self, C_in: int, C_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(C_in, C_out, kernel_size=1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The NAS-Bench-201 network of one cell (xautodl ``TinyNetwork``); forward returns logits.

    Args:
        ops: the six edge ops, in EDGES order (see :func:`parse_arch`).
        C: channels of the first stage (the benchmark uses 16).
        N: cells per stage (the benchmark uses 5).
        num_classes: outputs of the classifier.
    """

    def __init__(self, ops: Sequence[str], C: int, N: int, num_classes: int) -> None:
        super().__init__()
        self.arch = arch_string(ops)
        self.C, self.N, self.num_classes = C, N, num_classes
        self.stem = nn.Sequential(nn.Conv2d(3, C, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(C))
        cells: list[nn.Module] = []
        for stage, width in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                cells.append(ResNetBlock(width // 2, width))
            cells.extend(Cell(ops, width) for _ in range(N))
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * C, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        x = self.global_pooling(self.lastact(x)).flatten(1)
        return self.classifier(x)

    def feature_points(self) -> list[FeaturePoint]:
        """The last cell of each stage, the pre-pool map and the classifier."""
        # Stage s (0-based) ends at cell index N-1 + s*(N+1): each later stage adds a reduction block.
        stages = [
            FeaturePoint(f"cells.{self.N - 1 + s * (self.N + 1)}", self.C * 2**s, 2**s, "stage")
            for s in range(3)
        ]
        return [
            *stages,
            FeaturePoint("lastact", 4 * self.C, 4, "final"),
            FeaturePoint("classifier", self.num_classes, 1, "logits"),
        ]

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, C={self.C}, N={self.N}"


# --------------------------------------------------------------------------- space


@register_space
class NB201Space(SearchSpace):
    """NAS-Bench-201: six edges, five ops each, 15,625 cells.

    Args:
        C: channels of the first stage (benchmark: 16); smaller values make tests fast.
        N: cells per stage (benchmark: 5).
    """

    name = "nb201"
    finite = True

    def __init__(self, C: int = 16, N: int = 5) -> None:
        for key, value, default in (("C", C, 16), ("N", N, 5)):
            # bool is an int subclass, but C=True is surely a mistake.
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DasError(f"nb201 {key} must be a positive integer, got {value!r} (the benchmark uses {key}={default})")
        super().__init__(C=C, N=N)
        self.C, self.N = C, N

    def suggest(self, trial: optuna.Trial) -> ArchSpec:
        ops = [trial.suggest_categorical(f"edge_{t}<-{s}", OPS) for t, s in EDGES]
        return self.spec(arch=arch_string(ops))

    def build(self, spec: ArchSpec, num_classes: int) -> NB201Network:
        if spec.space != self.name:
            raise DasError(f"cannot build a {spec.space!r} architecture with the {self.name!r} space")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise DasError(f"num_classes must be a positive integer, got {num_classes!r}")
        return NB201Network(parse_arch(self._arch(spec)), self.C, self.N, num_classes)

    def enumerate(self) -> Iterator[ArchSpec]:
        """All 15,625 cells, the last edge varying fastest over OPS."""
        for ops in itertools.product(OPS, repeat=len(EDGES)):
            yield self.spec(arch=arch_string(ops))

    def canonical(self, spec: ArchSpec) -> str:
        """The benchmark's isomorphism key (see :func:`isomorph_key`)."""
        return isomorph_key(self._arch(spec))

    def spec(self, **choices: Any) -> ArchSpec:
        """A spec from ``arch=<arch string>``, validated and written in the standard form."""
        if set(choices) != {"arch"}:
            raise DasError(f"an nb201 spec takes one choice, arch='<arch string>', got {sorted(choices)}")
        return super().spec(arch=arch_string(parse_arch(choices["arch"])))

    def smallest(self) -> ArchSpec:
        """A member with the fewest parameters (parameter-free cells; skips keep it a real network)."""
        return self.spec(arch=arch_string(["skip_connect"] * len(EDGES)))

    @staticmethod
    def _arch(spec: ArchSpec) -> str:
        choices = dict(spec.choices)
        if "arch" not in choices:
            raise DasError(f"nb201 spec {spec} has no 'arch' choice; expected choices {{'arch': {_EXAMPLE!r}}}")
        return choices["arch"]
