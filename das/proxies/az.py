"""AZ-NAS: four complementary proxies from one forward and one backward pass.

Lee & Ham, "AZ-NAS: Assembling Zero-Cost Proxies for Network Architecture Search", CVPR 2024
(§3). The network is read block by block: f_0, …, f_L are the feature maps that enter and leave
its blocks (for NAS-Bench-201: the stem output and every cell output).

- ``az_expressivity`` (eq. 2): for each f_l (B×C×H×W) take its C×C covariance over the B·H·W
  positions, its eigenvalues normalised to sum 1, p; the block's score is the entropy
  −Σ p log(p + 1e-8); the proxy is the sum over blocks (isotropic features score high).
- ``az_progressivity`` (eq. 3): min over l of (expressivity of f_l − expressivity of f_{l−1}),
  i.e. expressivity should grow with depth everywhere.
- ``az_trainability`` (eq. 4–5): for each block l, a Rademacher signal g_out at its output is
  backpropagated through that block alone to g_in at its input (pixel-unshuffled to the output
  resolution when the block downsamples); σ is the largest singular value of E[g_in g_outᵀ]
  (C_in×C_out, averaged over positions) and the block scores −σ − 1/(σ + 1e-6) + 2 (0 at σ = 1,
  the gradient norm is preserved); the proxy is the mean over blocks.
- ``az_complexity``: FLOPs, as the authors use for NAS-Bench-201 (read from its API there).

All four read the shared labelled forward (expressivity, progressivity) and one extra
block-wise backward on its graph (trainability); AZ-NAS ranks each proxy over the candidates
and sums log(rank/m) — that aggregation belongs to the benchmark/ensemble, not here.

Where das adapts the authors' NAS-Bench-201 code:
- Blocks come from the feature contract: when the declared stage points are children of one
  ``nn.ModuleList``/``nn.Sequential`` (NB201's ``cells``), every child of it is a block and f_0
  is the input of the first one (the stem output), exactly the authors' features; otherwise the
  blocks are the stage points and the final map. The model's raw input is never a feature.
- Input: the shared labelled probe batch (the authors' NB201 code feeds Gaussian noise to
  AZ-NAS) and the model's own initialisation (they re-initialise with Kaiming-normal fan-in).
- Finite values: a block whose backward returns g_out unchanged (an identity cell) gets −∞ in
  the authors' code; das gives it the score of a block that passes no gradient, −1/1e-6 + 2, so
  such networks still rank last and the score stays finite. A feature with a zero covariance
  (all positions equal) has expressivity 0 instead of NaN, and tiny negative eigenvalues from
  rounding are clipped to 0.
- The Rademacher signals come from a generator seeded by the scoring seed.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from das.errors import DasError
from das.features import final_point
from das.proxies.base import register_proxy
from das.proxies.context import LabelledPass, ScoringContext, Tap, register_tap
from das.proxies.flops import flop_count

_EPS = 1e-6
_DEAD_BLOCK = -1.0 / _EPS + 2.0


def blocks(ctx: ScoringContext) -> list[str]:
    """Module names of the blocks AZ-NAS reads, in network order (see the module docstring)."""
    points = ctx.points
    stages = [p.module for p in points if p.role == "stage"]
    parents = {name.rpartition(".")[0] for name in stages}
    if stages and len(parents) == 1:
        parent = next(iter(parents))
        container = dict(ctx.model.named_modules()).get(parent) if parent else None
        if isinstance(container, (nn.ModuleList, nn.Sequential)):
            return [f"{parent}.{child}" for child, _ in container.named_children()]
    return list(dict.fromkeys([*stages, final_point(points).module]))  # the final map may be the last stage


class _BlockHooks(Tap):
    """Records each block's input and output on the labelled forward."""

    keep_graph = False

    def install(self, model: nn.Module, x: torch.Tensor) -> list[Any]:
        names = blocks(self.ctx)
        modules = dict(model.named_modules())
        self.names = names
        self.inputs: dict[str, torch.Tensor | None] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self._x = x
        handles = []
        for name in names:
            handles.append(modules[name].register_forward_pre_hook(self._pre(name)))
            handles.append(modules[name].register_forward_hook(self._post(name)))
        return handles

    def _keep(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.keep_graph else t.detach()

    def _pre(self, name: str):
        def hook(_m: nn.Module, inputs: tuple) -> None:
            inp = inputs[0] if inputs else None
            fed_raw = not isinstance(inp, torch.Tensor) or inp is self._x or inp.dim() != 4
            self.inputs[name] = None if fed_raw else self._keep(inp)

        return hook

    def _post(self, name: str):
        def hook(_m: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
            if not isinstance(out, torch.Tensor) or out.dim() != 4:
                raise DasError(f"AZ-NAS reads 4-D feature maps, but block {name!r} returns {type(out).__name__} of shape {getattr(out, 'shape', None)}")
            self.outputs[name] = self._keep(out)

        return hook

    def features(self) -> list[torch.Tensor]:
        """f_0 (the first block's input, unless it is the raw input), then every block output."""
        first = self.inputs.get(self.names[0])
        return ([first] if first is not None else []) + [self.outputs[n] for n in self.names if n in self.outputs]


@register_tap("block_features")
class BlockFeatures(_BlockHooks):
    """The block features of the labelled forward, detached (expressivity, progressivity)."""

    def close(self) -> None:
        self.expressivity = [expressivity_of(f) for f in self.features()]
        self.inputs, self.outputs = {}, {}


@register_tap("block_jacobians")
class BlockJacobians(_BlockHooks):
    """Per-block backward of a Rademacher signal on the labelled forward's graph (trainability)."""

    autograd = True
    keep_graph = True

    def after(self, labelled: LabelledPass) -> None:
        generator = torch.Generator(device=labelled.x.device).manual_seed(self.ctx.seed)
        self.scores: list[float] = []
        for name in reversed(self.names):
            f_in, f_out = self.inputs.get(name), self.outputs.get(name)
            if f_in is None or f_out is None:
                continue
            g_out = torch.randint(0, 2, f_out.shape, generator=generator, device=f_out.device).to(f_out.dtype) * 2 - 1
            g_in = None
            if f_out.requires_grad and f_in.requires_grad:
                (g_in,) = torch.autograd.grad(f_out, f_in, g_out, retain_graph=True, allow_unused=True)
            self.scores.append(block_trainability(name, f_in if g_in is None else g_in, g_out, dead=g_in is None))
        self.inputs, self.outputs = {}, {}


def expressivity_of(feature: torch.Tensor) -> float:
    """Entropy of the normalised eigenvalues of the channel covariance over B·H·W positions."""
    flat = feature.detach().double().permute(0, 2, 3, 1).reshape(-1, feature.shape[1])
    flat = flat - flat.mean(0, keepdim=True)
    sigma = flat.T @ flat / flat.shape[0]
    eig = torch.linalg.eigvalsh(sigma).clamp_min(0)
    total = eig.sum()
    if not total > 0:
        return 0.0
    p = eig / total
    return float(-(p * torch.log(p + 1e-8)).sum())


def block_trainability(name: str, g_in: torch.Tensor, g_out: torch.Tensor, dead: bool = False) -> float:
    """−σ − 1/(σ + 1e-6) + 2 for σ the top singular value of E[g_in g_outᵀ]."""
    if dead or (g_in.shape == g_out.shape and torch.equal(g_in, g_out)):
        return _DEAD_BLOCK
    b, co, ho, wo = g_out.shape
    if g_in.shape[2:] != g_out.shape[2:]:
        hi, wi = g_in.shape[2:]
        stride = hi // ho
        if stride < 1 or hi != stride * ho or wi != stride * wo:
            raise DasError(
                f"AZ-NAS trainability compares block {name!r}'s input {tuple(g_in.shape)} with its output {tuple(g_out.shape)}; "
                "it needs the input resolution to be an integer multiple of the output's"
            )
        g_in = F.pixel_unshuffle(g_in, stride)
    # E over batch and positions of g_in g_outᵀ: C_in×C_out
    mat = torch.tensordot(g_in.detach(), g_out.detach().to(g_in.dtype), dims=([0, 2, 3], [0, 2, 3])) / (b * ho * wo)
    sigma = float(torch.linalg.svdvals(mat.double()).max())
    return -sigma - 1.0 / (sigma + _EPS) + 2.0


@register_proxy("az_expressivity", needs={"block_features"})
def az_expressivity(ctx: ScoringContext) -> float:
    """Σ over block features of the entropy of their normalised covariance spectrum."""
    tap: Any = ctx.tap("block_features")
    return float(sum(tap.expressivity))


@register_proxy("az_progressivity", needs={"block_features"})
def az_progressivity(ctx: ScoringContext) -> float:
    """min over consecutive block features of the expressivity increase."""
    values = ctx.tap("block_features").expressivity  # type: ignore[attr-defined]
    if len(values) < 2:
        raise DasError(
            f"az_progressivity compares consecutive block features but {type(ctx.model).__name__} has {len(values)}; "
            "declare stage feature points (feature_points() with role 'stage')"
        )
    return float(min(b - a for a, b in zip(values, values[1:])))


@register_proxy("az_trainability", needs={"block_jacobians"})
def az_trainability(ctx: ScoringContext) -> float:
    """Mean over blocks of −σ − 1/σ + 2, σ the block's gradient-correlation spectral norm."""
    scores = ctx.tap("block_jacobians").scores  # type: ignore[attr-defined]
    if not scores:
        raise DasError(
            f"az_trainability needs a block fed by a feature map, but every block of {type(ctx.model).__name__} reads the raw input; "
            "declare stage feature points (feature_points() with role 'stage')"
        )
    return float(math.fsum(scores) / len(scores))


@register_proxy("az_complexity")
def az_complexity(ctx: ScoringContext) -> float:
    """FLOPs of one forward pass, the complexity term of AZ-NAS."""
    return flop_count(ctx)
