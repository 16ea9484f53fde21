"""Stage feature points read from a model's graph, with torchvision's own node names.

torchvision's feature extraction (``torchvision.models.feature_extraction``) names every node
of a model's FX graph after the module it runs in (``layer1.1.relu_1``, ``features.3.add``)
and reads a module name such as ``layer1`` as "the last node inside ``layer1``". das uses the
same names to find the stage outputs, the maps at which a stage hands over to the next
resolution:

1. ``get_graph_node_names`` lists the nodes; ``create_feature_extractor`` returns all of them,
   run once on ``meta`` tensors for their shapes (no FLOPs, the real weights untouched).
2. The *spine* is the nodes that every path from the input to the output passes through (no
   edge of the graph jumps over them): the block outputs, not a branch inside a block.
3. Where the spine's resolution changes, the stage that reduces it is the outermost module
   whose input is at the old resolution and whose output is at the new one (``layer2`` of a
   ResNet, the strided block of a MobileNet, ``transition1`` of a DenseNet). Its input is a
   stage output: the last map at the old resolution that a whole module ends with (so a
   MobileNet's stage ends with its last block, not with the expansion of the strided block).
4. That node is named by the outermost module that ends with it and runs once, so a forward
   hook on that module (:class:`das.features.FeatureTap`) sees exactly that map.

A model that torch.fx cannot trace gets no stage points; its final map and logits still come
from the dry forward pass of :mod:`das.nets.tracing`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence

import torch
from torch import fx, nn
from torch.func import functional_call

from das.features import FeaturePoint
from das.nets.tracing import Call

__all__ = ["graph_stages"]


def graph_stages(model: nn.Module, calls: Sequence[Call], final: str, input_size: tuple[int, int, int]) -> list[FeaturePoint]:
    """The stage points of ``model`` before its ``final`` map, in network order.

    Args:
        model: an FX-traceable model (every torchvision classification model is).
        calls: the model's dry forward pass (:func:`das.nets.tracing.trace`), used to check that
            each stage module runs once and gives the map the graph says.
        final: the module of the final map (the map the classifier pools); stages end before it.
        input_size: the ``(C, H, W)`` input the reductions are measured at.

    Returns:
        ``role="stage"`` points with strictly increasing reduction; empty when torch.fx cannot
        trace the model.
    """
    try:
        graph, names, outputs = _run_graph(model, input_size)
    except Exception:  # data-dependent control flow and the like: keep the final map and logits only
        return []
    modules = dict(model.named_modules())
    order = [n for n in graph.nodes if n in names]
    index = {n: i for i, n in enumerate(order)}

    def scopes(node: fx.Node) -> list[str]:
        """The modules a node runs inside, outermost first (for a module call, itself last)."""
        path = node.target if node.op == "call_module" else names[node].rpartition(".")[0]
        parts = str(path).split(".") if path else []
        return [m for m in (".".join(parts[: k + 1]) for k in range(len(parts))) if m in modules]

    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, node in enumerate(order):
        for m in scopes(node):
            first.setdefault(m, i)
            last[m] = i
    if final not in last:
        return []
    runs = Counter(c.name for c in calls)
    spine = [n for n in _spine(order, outputs) if index[n] <= last[final]]

    def reduction(node: fx.Node) -> int:
        return input_size[-1] // outputs[node].shape[-1]

    def ended_by(node: fx.Node) -> str | None:
        """The outermost module that ends with ``node`` and runs once (what a hook can see)."""
        return next((m for m in scopes(node) if last[m] == index[node] and runs[m] == 1), None)

    points: dict[str, tuple[FeaturePoint, torch.Size]] = {}
    for before, after in itertools.pairwise(spine):
        if reduction(before) == reduction(after):
            continue
        for m in scopes(after):  # the outermost module that takes the map from one resolution to the next
            entry = [n for n in spine if index[n] < first[m]]
            exit_ = order[last[m]]
            if (
                entry
                and exit_ in spine
                and reduction(entry[-1]) == reduction(before)
                and reduction(exit_) == reduction(after)
            ):
                stage = entry[-1]
                name = ended_by(stage) if stage.op != "placeholder" else None
                if name is not None and name != final:
                    points[name] = (FeaturePoint(name, outputs[stage].shape[1], reduction(stage), "stage"), outputs[stage].shape)
                break
    return _checked(points.values(), calls)


def _run_graph(model: nn.Module, input_size: tuple[int, ...]) -> tuple[fx.Graph, dict[fx.Node, str], dict[fx.Node, object]]:
    """torchvision's eval-mode graph of ``model``, its node names and every node's output on one input."""
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    was_training = model.training
    try:
        _, eval_names = get_graph_node_names(model)
        # The extractor shares the model's leaf modules; its eval() is undone in finally.
        extractor = create_feature_extractor(model, return_nodes=eval_names, suppress_diff_warning=True).eval()
        with torch.no_grad():
            try:
                tensors = itertools.chain(extractor.named_parameters(), extractor.named_buffers())
                meta = {k: torch.empty_like(v, device="meta") for k, v in tensors}
                values = functional_call(extractor, meta, (torch.empty(1, *input_size, device="meta"),))
            except Exception:  # a forward that makes data of its own cannot run on meta
                values = extractor(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)
    graph = extractor.graph
    (output,) = [n for n in graph.nodes if n.op == "output"]
    nodes: dict[str, fx.Node] = output.args[0]
    return graph, {n: q for q, n in nodes.items()}, {n: values[q] for q, n in nodes.items()}


def _spine(order: Sequence[fx.Node], outputs: dict[fx.Node, object]) -> list[fx.Node]:
    """The 4-D maps that no tensor edge of the graph jumps over, in graph order.

    Graph order is topological, so a node is on every input-to-output path exactly when no
    edge runs from an earlier node to a later one around it. Edges carrying sizes or other
    non-tensors do not count: they carry no features.
    """
    index = {n: i for i, n in enumerate(order)}
    spine, reach = [], 0
    for i, node in enumerate(order):
        value = outputs[node]
        if reach <= i and isinstance(value, torch.Tensor) and value.dim() == 4:
            spine.append(node)
        if isinstance(value, torch.Tensor):
            reach = max([reach, *(index[u] for u in node.users if u in index)])
    return spine


def _checked(points: Iterable[tuple[FeaturePoint, torch.Size]], calls: Sequence[Call]) -> list[FeaturePoint]:
    """Keep the points whose module's hooked output has the graph's shape, with reductions rising."""
    hooked = {c.name: c.output for c in calls}
    kept: list[FeaturePoint] = []
    for point, shape in points:
        out = hooked.get(point.module)
        if isinstance(out, torch.Tensor) and out.shape == shape and (not kept or point.reduction > kept[-1].reduction):
            kept.append(point)
    return kept
