"""Teachers: the trained networks das distils from, built from one string.

A teacher spec is one of

- a registered name: ``resnet20``, ``resnet32``, ``resnet44``, ``resnet56``, ``resnet110``
  (the CIFAR ResNets of He et al., "Deep Residual Learning for Image Recognition", CVPR 2016),
  or anything added with :func:`register_teacher`;
- ``timm:NAME``: ``timm.create_model(NAME, pretrained=False, num_classes=...)``;
- ``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None, num_classes=...)``;
- ``package.module:function``: your own factory returning an ``nn.Module`` (it is passed
  ``num_classes`` when it accepts that argument).

Weights only ever come from a local file (``checkpoint=``, loaded strictly by
:func:`teachers.checkpoint.load_checkpoint`); das never downloads from a hub, so a run is
reproducible offline and a teacher cannot change under it.

Every teacher answers :func:`das.features.feature_points`. The built-ins declare their points.
timm and torchvision models get declared points from one dry forward pass on the ``meta``
device (shapes only, no FLOPs): the final point is the map the classifier pools (for timm, the
output of ``forward_features``; for torchvision, the input of the last global pooling layer),
stages come from timm's ``feature_info``, and the logits are the ``nn.Linear`` classifier
(``get_classifier()`` for timm). Models without a channels-first 4-D map before their head
(vision transformers' token sequences, channels-last Swin features) are refused, because das's
feature distillation needs one. A ``package.module:function`` teacher should declare a
``feature_points()`` method; if it does not, das infers the points from an example input
(:func:`das.features.infer_feature_points`).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar, overload

import torch
from torch import nn
from torch.func import functional_call

from das.errors import DasError, close_matches_hint
from das.features import FeaturePoint
from das.registry import Registry
from teachers.checkpoint import load_checkpoint

__all__ = ["TEACHERS", "DeclaredPoints", "create_teacher", "load_checkpoint", "register_teacher", "teacher_names"]

Factory = Callable[..., nn.Module]
F = TypeVar("F", bound=Factory)

TEACHERS: Registry[Factory] = Registry("teacher")
"""Registered teacher factories; each is called as ``factory(num_classes=...)``."""

# Pooling layers which, when global, read "the map the classifier pools" in torchvision models.
_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)
# torchvision classification models are ImageNet networks; their points are traced at this size.
_TORCHVISION_INPUT = (3, 224, 224)


@overload
def register_teacher(name_or_factory: F) -> F: ...
@overload
def register_teacher(name_or_factory: str | None = None) -> Callable[[F], F]: ...
def register_teacher(name_or_factory: F | str | None = None) -> F | Callable[[F], F]:
    """Register a teacher factory taking ``num_classes``: ``@register_teacher`` or ``@register_teacher("name")``.

    A duplicate name raises ``ValueError``.
    """
    if callable(name_or_factory):
        return TEACHERS.register()(name_or_factory)
    return TEACHERS.register(name_or_factory)


def teacher_names() -> list[str]:
    """The registered teacher names, sorted (timm/torchvision/module specs are not listed)."""
    return TEACHERS.names()


def create_teacher(spec: str, checkpoint: str | None = None, num_classes: int = 10) -> nn.Module:
    """Build the teacher named by ``spec`` and load ``checkpoint`` into it strictly.

    Args:
        spec: a registered name, ``timm:NAME``, ``torchvision:NAME`` or
            ``package.module:function`` (see the module docstring).
        checkpoint: path of a local weights file; None leaves the initial (random) weights.
        num_classes: outputs of the classifier.

    Returns:
        The model, in training mode as built; the caller freezes it and calls ``eval()``.

    Raises:
        DasError: an unknown name, an unimportable factory, or a checkpoint that does not fit.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DasError(f"teacher spec must be a non-empty string such as 'resnet20' or 'timm:resnet18', got {spec!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise DasError(f"num_classes must be a positive integer, got {num_classes!r}")
    spec = spec.strip()
    source, sep, name = spec.partition(":")
    if not sep:
        if spec not in TEACHERS:
            raise DasError(
                f"unknown teacher {spec!r}: {close_matches_hint(spec, TEACHERS.names())} "
                "(or use timm:NAME, torchvision:NAME or package.module:function)"
            )
        model = TEACHERS.create(spec, num_classes=num_classes)
    elif source == "timm":
        model = _timm_teacher(name, num_classes)
    elif source == "torchvision":
        model = _torchvision_teacher(name, num_classes)
    else:
        model = _imported_teacher(source, name, num_classes, spec)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return model


@dataclass(frozen=True)
class DeclaredPoints:
    """A ``feature_points()`` callable attached to a model instance that has no such method.

    A small class rather than a lambda so the model still pickles (e.g. to spawned workers).
    """

    points: tuple[FeaturePoint, ...]

    def __call__(self) -> list[FeaturePoint]:
        return list(self.points)


def _timm_teacher(name: str, num_classes: int) -> nn.Module:
    import timm

    if not name or ":" in name or "/" in name:
        raise DasError(
            f"timm teacher {name!r} is not an architecture name: das builds timm models by name "
            "only and never downloads (no hf-hub: specs); use timm:ARCH with checkpoint=LOCAL_FILE"
        )
    if not timm.is_model(name):
        raise DasError(f"unknown timm model {name!r}: {_hint(name, timm.list_models(), 'timm.list_models()')}")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    model.feature_points = DeclaredPoints(tuple(_timm_points(model, name)))
    return model


def _torchvision_teacher(name: str, num_classes: int) -> nn.Module:
    from torchvision import models

    known = models.list_models(module=models)  # classification models only
    if name not in known:
        raise DasError(
            f"unknown torchvision classification model {name!r}: "
            f"{_hint(name, known, 'torchvision.models.list_models(module=torchvision.models)')}"
        )
    model = models.get_model(name, weights=None, num_classes=num_classes)
    model.feature_points = DeclaredPoints(tuple(_pooled_points(model, f"torchvision:{name}", _TORCHVISION_INPUT)))
    return model


def _imported_teacher(module_name: str, attr: str, num_classes: int, spec: str) -> nn.Module:
    if not module_name or not attr.isidentifier():
        raise DasError(f"teacher spec {spec!r} is not package.module:function (e.g. 'my_models.nets:big_cnn')")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise DasError(f"cannot import {module_name!r} for teacher {spec!r} ({e}); put it on PYTHONPATH") from None
    factory = getattr(module, attr, None)
    if factory is None:
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise DasError(f"module {module_name!r} has no {attr!r} for teacher {spec!r}: {close_matches_hint(attr, public)}")
    if not callable(factory):
        raise DasError(f"{spec!r} is a {type(factory).__name__}, not a function returning an nn.Module")
    model = factory(num_classes=num_classes) if _accepts_num_classes(factory) else factory()
    if not isinstance(model, nn.Module):
        raise DasError(f"teacher factory {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _accepts_num_classes(factory: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # some builtins and C extensions have no signature
        return False
    return any(p.name == "num_classes" or p.kind is p.VAR_KEYWORD for p in params)


def _hint(name: str, choices: Iterable[str], lister: str) -> str:
    """Close matches among many names (timm has over a thousand), never the whole list."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return f"{lister} lists the known names"


# ---- feature points by a dry forward pass -------------------------------------------------


class _Call(NamedTuple):
    name: str
    module: nn.Module
    input: object
    output: object


class _Method(nn.Module):
    """Calls one method of ``model`` as ``forward``, so ``functional_call`` can run it."""

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, x: torch.Tensor) -> Any:
        return getattr(self.model, self.method)(x)


def _trace(model: nn.Module, method: str, input_size: tuple[int, ...]) -> tuple[list[_Call], Any]:
    """Run ``model.<method>`` on one input, recording every submodule call in completion order.

    The run uses meta tensors in place of the weights: it yields every shape at no cost in
    compute or memory, even for a large teacher, and leaves the real weights untouched. A
    forward that makes data of its own (``.item()``, CPU constants) cannot run on meta, so it
    falls back to one real pass on a single zero image.
    """
    calls: list[_Call] = []

    def recorder(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            calls.append(_Call(name, module, inputs[0] if inputs else None, output))

        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in model.named_modules() if n]
    wrapper = _Method(model, method)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                tensors = itertools.chain(model.named_parameters(), model.named_buffers())
                meta = {f"model.{k}": torch.empty_like(v, device="meta") for k, v in tensors}
                out = functional_call(wrapper, meta, (torch.empty(1, *input_size, device="meta"),))
            except Exception:
                calls.clear()
                out = wrapper(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return calls, out


def _producer(calls: list[_Call], tensor: object) -> str | None:
    """The outermost module (the last to finish) whose output is ``tensor``, skipping Identity."""
    names = [c.name for c in calls if c.output is tensor and not isinstance(c.module, nn.Identity)]
    return names[-1] if names else None


def _is_global_pool(call: _Call) -> bool:
    """A pooling layer that takes a spatial map to one value per channel (not a stride-2 pool)."""
    out = call.output
    flat = isinstance(out, torch.Tensor) and (out.dim() == 2 or (out.dim() == 4 and out.shape[-2:] == (1, 1)))
    return isinstance(call.module, _POOLS) and _is_nchw(call.input) and flat


def _is_nchw(t: object, channels: int | None = None) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() == 4 and (channels is None or t.shape[1] == channels)


def _classifier_point(model: nn.Module, classifier: object, what: str) -> FeaturePoint:
    name = next((n for n, m in model.named_modules() if m is classifier and n), None)
    if name is None or not isinstance(classifier, nn.Linear):
        raise DasError(
            f"{what} has no nn.Linear classifier (it has {type(classifier).__name__}), which das's "
            "logit distillation needs; pick another model or wrap it in a package.module:function teacher"
        )
    return FeaturePoint(name, classifier.out_features, 1, "logits")


def _no_map(what: str) -> DasError:
    return DasError(
        f"{what} gives no channels-first 4-D feature map before its classifier (e.g. a vision "
        "transformer's tokens), which das's feature distillation needs; use a convolutional model "
        "or a package.module:function teacher with a feature_points() method"
    )


def _timm_points(model: nn.Module, name: str) -> list[FeaturePoint]:
    """Final map = output of ``forward_features``; stages = timm's ``feature_info``; logits = ``get_classifier()``."""
    what = f"timm model {name!r}"
    size = tuple(getattr(model, "pretrained_cfg", {}).get("input_size") or (3, 224, 224))
    calls, out = _trace(model, "forward_features", size)
    # The channel check rejects channels-last (NHWC) features such as Swin's.
    final = _producer(calls, out) if _is_nchw(out, getattr(model, "num_features", None)) else None
    if final is None:
        raise _no_map(what)
    logits = _classifier_point(model, model.get_classifier(), what)
    outputs = {c.name: c.output for c in calls}
    stages = [
        FeaturePoint(info["module"], info["num_chs"], info["reduction"], "stage")
        for info in getattr(model, "feature_info", [])
        if _is_nchw(outputs.get(info["module"]), info["num_chs"]) and outputs[info["module"]] is not out
    ]
    return [*stages, FeaturePoint(final, out.shape[1], size[-1] // out.shape[-1], "final"), logits]


def _pooled_points(model: nn.Module, what: str, size: tuple[int, int, int]) -> list[FeaturePoint]:
    """Final map = the input of the last global pooling layer before the last nn.Linear."""
    calls, _ = _trace(model, "forward", size)
    linears = [i for i, c in enumerate(calls) if isinstance(c.module, nn.Linear)]
    if not linears:
        raise DasError(
            f"{what} has no nn.Linear classifier, which das's logit distillation needs; pick "
            "another model or wrap it in a package.module:function teacher"
        )
    before = calls[: linears[-1]]
    pooled = next((c.input for c in reversed(before) if _is_global_pool(c)), None)
    final = _producer(before, pooled) if pooled is not None else None
    if final is None:
        # Pooled by a functional call (e.g. densenet's F.adaptive_avg_pool2d): take the last
        # spatial map, unless token sequences follow it (then it is a ViT's patch embedding).
        maps = [i for i, c in enumerate(before) if _is_nchw(c.output) and c.output.shape[-1] > 1]
        tokens_after = maps and any(
            isinstance(c.output, torch.Tensor) and c.output.dim() == 3 for c in before[maps[-1]:]
        )
        if not maps or tokens_after:
            raise _no_map(what)
        pooled = before[maps[-1]].output
        final = _producer(before, pooled)
    assert isinstance(pooled, torch.Tensor) and final is not None
    logits = _classifier_point(model, calls[linears[-1]].module, what)
    return [FeaturePoint(final, pooled.shape[1], size[-1] // pooled.shape[-1], "final"), logits]


from teachers import cifar_resnet  # noqa: E402,F401  (registers the built-in teachers)
