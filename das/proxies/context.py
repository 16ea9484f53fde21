"""What a proxy reads: the model, the probe batches, and passes shared by every requested proxy.

Most zero-cost proxies read the same thing: one labelled forward pass on the first probe batch
and the cross-entropy backward through it (snip, grad_norm, fisher, ZiCo's first batch, GraSP's
gradient), plus hooks on that forward (activation codes for NASWOT and SWAP, feature maps for MeCo,
AZ-NAS and DisWOT). So a proxy declares what it reads when it is registered (its ``needs``), and
:class:`ScoringContext` runs ONE labelled pass for all requested proxies, installing exactly the
hooks those needs ask for, then only the backward passes that are truly extra (the input
Jacobian of jacov, GraSP's Hessian-vector product, AZ-NAS's block-wise backward) on the graph
that forward recorded. Passes that cannot be shared (SynFlow's data-free pass, ZiCo's further
batches) run once each.

A need is either a built-in product of the context (:data:`BUILTIN_NEEDS`) or the name of a
:class:`Tap` registered with :func:`register_tap`; a tap lives in the module of the proxy that
uses it (nwot.py defines the activation-kernel tap). A proxy that reads something it did not declare
gets a DasError, so the declarations stay honest: unfused scoring (one context per proxy, built
from that proxy's needs only) would otherwise be silently different from fused scoring.

Scoring puts the model in train mode (batch statistics at initialisation, as zero-cost proxy
papers do); :func:`das.proxies.state.preserved` undoes every side effect. Every forward pass
runs under a fixed seed (forked, so the caller's RNG does not move), so a model with dropout
gets the same masks whether its proxies are fused or computed one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from das.errors import DasError
from das.features import FeaturePoint, feature_points, final_point, logits_point
from das.nets.weights import prunable_layers
from das.proxies.activations import watch_activations
from das.proxies.base import PROXIES
from das.proxies.needs import BUILTIN_NEEDS, TAPS, known_needs, register_tap  # noqa: F401  (re-exported: proxies import them from here)

Batch = tuple[torch.Tensor, torch.Tensor]

@dataclass(frozen=True)
class Capture:
    """One forward pass seen at the feature contract.

    Attributes:
        final_map: the pre-pool feature map (B×C×H×W).
        classifier_input: what the classifier Linear receives (B×C).
        logits: the network output (B×K).
    """

    final_map: torch.Tensor
    classifier_input: torch.Tensor
    logits: torch.Tensor


def capture(model: nn.Module, x: torch.Tensor, points: list[FeaturePoint]) -> Capture:
    """Run ``model`` on ``x`` without gradients, recording the final map and classifier input."""
    tap = _CaptureHooks(model, points)
    try:
        with torch.no_grad():
            model(x)
    finally:
        tap.remove()
    return tap.capture()


class _CaptureHooks:
    """Forward hooks on the final map and the classifier (shared by teacher and student reads)."""

    def __init__(self, model: nn.Module, points: list[FeaturePoint]) -> None:
        modules = dict(model.named_modules())
        self.classifier_name = logits_point(points).module
        self.seen: dict[str, torch.Tensor] = {}
        self.handles = [
            modules[final_point(points).module].register_forward_hook(self._on_final),
            modules[self.classifier_name].register_forward_hook(self._on_classifier),
        ]

    def _on_final(self, _m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
        self.seen["final"] = out.detach()

    def _on_classifier(self, _m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        self.seen["input"], self.seen["logits"] = inputs[0].detach(), out.detach()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def capture(self) -> Capture:
        if self.seen["input"].dim() != 2:
            raise DasError(
                f"classifier {self.classifier_name!r} receives a {self.seen['input'].dim()}-D input; das expects pooled B×C features"
            )
        return Capture(self.seen["final"].float(), self.seen["input"].float(), self.seen["logits"].float())


# --------------------------------------------------------------------------- taps


class Tap:
    """Reads the shared labelled pass on behalf of one or more proxies.

    A tap is created per context, installs forward hooks for the labelled forward
    (:meth:`install`), may run an extra backward pass on the graph that forward recorded
    (:meth:`after`), and keeps whatever its proxies read as attributes.

    Class attributes say what the labelled pass must provide:
        ce_backward: the tap reads the cross-entropy backward (its tensor hooks fire during
            it, or it reads the weight gradients), so that backward runs.
        autograd: the tap runs its own backward in :meth:`after`, so the forward is recorded.
        input_grad: the tap differentiates with respect to the input batch.
        create_graph: the tap differentiates the weight gradients again (a Hessian-vector
            product), so the cross-entropy backward records its own graph. Its values are the
            same either way (the same kernels run), so the other proxies do not notice.
        activations: the tap reads every activation call of the forward, module or function
            (:meth:`on_activation`); one :class:`~das.proxies.activations.ActivationWatch`
            serves all such taps.
    """

    ce_backward: bool = False
    autograd: bool = False
    input_grad: bool = False
    create_graph: bool = False
    activations: bool = False

    def __init__(self, ctx: ScoringContext) -> None:
        self.ctx = ctx

    def install(self, model: nn.Module, x: torch.Tensor) -> list[Any]:
        """Register forward hooks for the labelled forward; return their handles (removed after it)."""
        return []

    def on_activation(self, pre: torch.Tensor) -> None:
        """With ``activations``: the input of an activation the labelled forward applies, before it runs."""

    def close(self) -> None:
        """Called right after the cross-entropy backward (or the forward when there is none)."""

    def after(self, labelled: LabelledPass) -> None:
        """Extra backward passes on the recorded graph (``retain_graph=True``; freed afterwards)."""


@dataclass
class LabelledPass:
    """The shared pass on the first probe batch.

    While the taps' :meth:`Tap.after` run, ``logits`` and ``loss`` still carry their autograd
    graph (and ``x`` requires grad when a tap asked for it); afterwards they are detached.
    """

    x: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor
    loss: torch.Tensor
    weights: list[torch.Tensor]
    weight_grads: list[torch.Tensor] | None
    taps: dict[str, Tap]
    graph_grads: list[torch.Tensor | None] | None = None


# --------------------------------------------------------------------------- helpers


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block under ``torch.manual_seed(seed)`` without moving the caller's RNG."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# --------------------------------------------------------------------------- context


class ScoringContext:
    """The model, its probe batches and (optionally) a teacher reference, with shared passes.

    Args:
        model: the network being scored (left unchanged by scoring).
        batches: labelled probe batches ``(x, y)``, already on the model's device.
        teacher: whatever teacher-dependent proxies compare against (e.g. a DisWOT reference).
        reference: what population-relative proxies rank against (an ensemble reference).
        needs: what the proxies scored with this context read (builtin needs and tap names).
        seed: seeds every forward pass and every random probe signal.
        flops: the model's FLOPs on one probe input, if already counted (read by ``flops`` and
            ``az_complexity`` instead of a second count).
    """

    def __init__(
        self,
        model: nn.Module,
        batches: list[Batch],
        teacher: Any = None,
        needs: frozenset[str] | set[str] | tuple[str, ...] = (),
        seed: int = 0,
        reference: Any = None,
        flops: int | None = None,
    ) -> None:
        if not batches:
            raise DasError("scoring needs at least one probe batch, got none")
        unknown = set(needs) - known_needs()
        if unknown:
            raise DasError(f"unknown proxy needs {sorted(unknown)}; known: {', '.join(sorted(known_needs()))}")
        self.model = model
        self.batches = batches
        self.teacher = teacher
        self.reference = reference
        self.needs = frozenset(needs)
        self.seed = seed
        self._memo: dict[str, Any] = {} if flops is None else {"flops": float(flops)}  # the key das.proxies.flops memoises under

    # ---------------------------------------------------------------- generic

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """Compute a value shared by several proxies once per model."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def value(self, proxy: str) -> float:
        """The score of a registered proxy on this context, computed once (an ensemble reads its members)."""
        return self.memo(f"proxy:{proxy}", lambda: float(PROXIES.get(proxy).fn(self)))

    def require(self, need: str) -> None:
        """Raise unless ``need`` was declared by the proxies of this context."""
        if need not in self.needs:
            raise DasError(
                f"a proxy read {need!r} but no proxy scored here declared it; add it to the proxy's "
                f"register_proxy(needs=...) (declared: {sorted(self.needs)})"
            )

    @cached_property
    def points(self) -> list[FeaturePoint]:
        return feature_points(self.model, self.batches[0][0])

    @cached_property
    def layers(self) -> list[tuple[str, nn.Module]]:
        """Conv and linear layers, in ``named_modules()`` order."""
        return prunable_layers(self.model)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.batches[0][0].shape[1:])

    # ---------------------------------------------------------------- the labelled pass

    @property
    def labelled(self) -> LabelledPass:
        """The shared labelled pass (computed on first use, with the hooks of every declared tap)."""
        return self.memo("labelled", self._labelled_pass)

    def tap(self, name: str) -> Tap:
        """The tap ``name`` after the labelled pass."""
        self.require(name)
        return self.labelled.taps[name]

    def weight_grads(self) -> list[torch.Tensor]:
        """∂CE/∂W on the first batch for each of :attr:`layers` (zeros where a weight is unused)."""
        if "batch_grads" not in self.needs:
            self.require("weight_grads")
        grads = self.labelled.weight_grads
        assert grads is not None
        return grads

    def batch_grads(self) -> list[list[torch.Tensor]]:
        """:meth:`weight_grads` on every probe batch, the first from the shared pass."""
        self.require("batch_grads")
        return self.memo("batch_grads", self._batch_grads)

    @cached_property
    def first_capture(self) -> Capture:
        """Final map, classifier input and logits on the first batch, in train mode."""
        return self.tap("final_capture").capture  # type: ignore[attr-defined]

    def _labelled_pass(self) -> LabelledPass:
        model = self.model
        x, y = self.batches[0]
        taps = {name: TAPS.get(name)(self) for name in sorted(self.needs) if name in TAPS}
        create = any(t.create_graph for t in taps.values())
        ce = bool({"weight_grads", "batch_grads"} & self.needs) or create or any(t.ce_backward for t in taps.values())
        extra = [t for t in taps.values() if t.autograd]
        record = ce or bool(extra)
        weights = [m.weight for _, m in self.layers]
        flags = [w.requires_grad for w in weights]
        if any(t.input_grad for t in taps.values()):
            x = x.detach().clone().requires_grad_(True)
        model.train()
        handles: list[Any] = []
        try:
            if record:
                for w in weights:
                    w.requires_grad_(True)
            for t in taps.values():
                handles += t.install(model, x)
            listeners = [t.on_activation for t in taps.values() if t.activations]
            with seeded(self.seed, x.device), torch.set_grad_enabled(record):
                with watch_activations(listeners):
                    logits = model(x)
                loss = F.cross_entropy(logits, y)
            for h in handles:
                h.remove()
            handles = []
            grads = found = None
            if ce:
                if not weights:
                    raise DasError(f"{type(model).__name__} has no convolution or linear layer, so gradient proxies have nothing to score")
                found = torch.autograd.grad(loss, weights, retain_graph=bool(extra), create_graph=create, allow_unused=True)
                grads = [torch.zeros_like(w) if g is None else g.detach() for w, g in zip(weights, found)]
            for t in taps.values():
                t.close()
            labelled = LabelledPass(x, y, logits, loss, weights, grads, taps, list(found) if create and found else None)
            for t in extra:  # sorted by name, so the order (and any RNG use) never depends on the request
                t.after(labelled)
        finally:
            for h in handles:
                h.remove()
            for w, flag in zip(weights, flags):
                w.requires_grad_(flag)
        # Drop the graph: every backward that needed it has run.
        labelled.x, labelled.logits, labelled.loss = x.detach(), logits.detach(), loss.detach()
        labelled.graph_grads = None
        return labelled

    def _batch_grads(self) -> list[list[torch.Tensor]]:
        out = [self.weight_grads()]
        weights = [m.weight for _, m in self.layers]
        flags = [w.requires_grad for w in weights]
        self.model.train()
        try:
            for w in weights:
                w.requires_grad_(True)
            for i, (x, y) in enumerate(self.batches[1:], start=1):
                with seeded(self.seed + i, x.device), torch.enable_grad():
                    loss = F.cross_entropy(self.model(x), y)
                found = torch.autograd.grad(loss, weights, allow_unused=True)
                out.append([torch.zeros_like(w) if g is None else g for w, g in zip(weights, found)])
        finally:
            for w, flag in zip(weights, flags):
                w.requires_grad_(flag)
        return out


@register_tap("final_capture")
class FinalCapture(Tap):
    """The final feature map, classifier input and logits of the labelled forward (DisWOT)."""

    def install(self, model: nn.Module, x: torch.Tensor) -> list[Any]:
        self._hooks = _CaptureHooks(model, self.ctx.points)
        return self._hooks.handles

    def close(self) -> None:
        self.capture = self._hooks.capture()
