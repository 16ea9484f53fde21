"""Students from a timm model family, scaled through timm's own depth and width arguments.

A user who deploys timm networks wants the best student *of that family*, not an NB201 cell.
This space builds every member with timm itself, from random weights (``pretrained=False``;
nothing is ever downloaded), at the data's class count, and only through the arguments timm
exposes for scaling a family:

- ``resnet`` (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; timm's
  ``ResNet``): ``timm.create_model(model, layers=(b1, b2, b3, b4), channels=(w, 2w, 4w, 8w))``,
  i.e. the blocks of each of the four stages and the first stage's width, every other argument
  (block type, stem) being the named model's own (default ``resnet18``: BasicBlocks, 7×7 stem);
- ``mobilenetv3`` (Howard et al., "Searching for MobileNetV3", ICCV 2019) and ``efficientnet``
  (Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019, §3.3): the
  ``channel_multiplier`` and ``depth_multiplier`` of timm's generators
  (``timm.models.mobilenetv3._gen_mobilenet_v3``, ``timm.models.efficientnet._gen_efficientnet``;
  EfficientNet-B1…B7 are B0 at larger multipliers). The registered model names fix these
  multipliers in their entry points, so the generators are called directly.

``model_args`` passes any further timm keyword argument through unchanged (``{output_stride: 8}``
keeps a resnet's or an efficientnet's last map at 4×4 on 32×32 images by dilating its last
stages, at more FLOPs; ``{stem_type: deep, stem_width: 16}`` narrows a resnet's 64-channel stem).

Every member runs on any image size (timm's strided convolutions pad, so a 1×1 map stays 1×1);
at timm's total stride of 32 the last map is 1×1 on CIFAR's 32×32 images and on 16×16 digits.

Feature points are what ``timm:NAME`` teachers declare (:func:`das.nets.timm_points.timm_points`):
timm's ``feature_info`` stages, the output of ``forward_features`` as the final map, and the
classifier. The space is finite: every member is a product of the choice lists, and
:meth:`TimmSpace.canonical` merges multipliers that timm rounds to the same network.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import optuna
import torch
from torch import nn

from das.errors import DasError, close_matches_hint, close_names_hint
from das.spaces.base import SearchSpace
from das.spaces.registry import register_space
from das.spaces.choices import distinct_positive
from das.spec import ArchSpec
from das.nets.timm_points import timm_points
from das.nets.tracing import DeclaredPoints

#: timm's ResNet has exactly four stages (its ``forward_features`` calls layer1..layer4).
STAGES = 4

#: The default choice lists: small enough that a CPU scores a candidate in well under a second.
RESNET_DEPTHS: tuple[int, ...] = (1, 2)
RESNET_WIDTHS: tuple[int, ...] = (16, 32)
CHANNEL_MULTIPLIERS: tuple[float, ...] = (0.25, 0.5, 0.75)
DEPTH_MULTIPLIERS: tuple[float, ...] = (0.5, 1.0)

#: Each family's default model and the models its generator builds (resnet: any timm ResNet).
DEFAULT_MODEL = {"resnet": "resnet18", "mobilenetv3": "mobilenetv3_small_100", "efficientnet": "efficientnet_b0"}
GENERATOR_MODELS = {
    "mobilenetv3": ("mobilenetv3_small_100", "mobilenetv3_large_100"),
    "efficientnet": ("efficientnet_b0",),
}
FAMILIES = tuple(DEFAULT_MODEL)

#: The space arguments that hold each family's choice lists.
_LISTS = {"resnet": ("depths", "widths"), "mobilenetv3": ("channel_multipliers", "depth_multipliers")}
_LISTS["efficientnet"] = _LISTS["mobilenetv3"]

#: Settings whose smallest member timm has built (see TimmSpace.__init__).
_CHECKED: set[str] = set()

#: timm arguments the space sets itself, or that would load weights: never from model_args.
_RESERVED = {
    "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir", "features_only",
    "num_classes", "layers", "channels", "channel_multiplier", "depth_multiplier",
}


@register_space
class TimmSpace(SearchSpace):
    """Depth and width choices of one timm family, each member built by timm with random weights.

    Args:
        family: ``resnet``, ``mobilenetv3`` or ``efficientnet``.
        model: the timm model whose other arguments are kept: for resnet any timm ResNet
            (``timm.list_models(module='resnet')``, default ``resnet18``); for mobilenetv3
            ``mobilenetv3_small_100`` (default) or ``mobilenetv3_large_100``; for efficientnet
            ``efficientnet_b0``.
        depths: resnet only: the BasicBlock (or Bottleneck) counts each of the 4 stages may have.
        widths: resnet only: the first stage's channels a member may have (stage s has w·2^(s-1)).
        channel_multipliers: mobilenetv3/efficientnet only: timm's ``channel_multiplier`` choices.
        depth_multipliers: mobilenetv3/efficientnet only: timm's ``depth_multiplier`` choices.
        model_args: further keyword arguments passed to timm unchanged (a mapping, or its JSON).
    """

    name = "timm"
    finite = True

    def __init__(
        self,
        family: str = "resnet",
        model: str | None = None,
        depths: Sequence[int] | None = None,
        widths: Sequence[int] | None = None,
        channel_multipliers: Sequence[float] | None = None,
        depth_multipliers: Sequence[float] | None = None,
        model_args: Mapping[str, Any] | str | None = None,
    ) -> None:
        if family not in FAMILIES:
            raise DasError(f"timm space family {family!r} is not supported: {close_matches_hint(str(family), FAMILIES)}")
        given = {"depths": depths, "widths": widths, "channel_multipliers": channel_multipliers, "depth_multipliers": depth_multipliers}
        for key, value in given.items():
            if value is not None and key not in _LISTS[family]:
                raise DasError(
                    f"timm space arg {key!r} is not for family {family!r}, which takes {', '.join(_LISTS[family])} "
                    "(and model, model_args)"
                )
        self.family = family
        self.model = self._check_model(family, DEFAULT_MODEL[family] if model is None else model)
        self.model_args = _model_args(model_args)
        if family == "resnet":
            self.depths = distinct_positive("timm space", "depths", RESNET_DEPTHS if depths is None else depths, int)
            self.widths = distinct_positive("timm space", "widths", RESNET_WIDTHS if widths is None else widths, int)
            lists = {"depths": self.depths, "widths": self.widths}
        else:
            self.channel_multipliers = distinct_positive("timm space", "channel_multipliers", CHANNEL_MULTIPLIERS if channel_multipliers is None else channel_multipliers, float)
            self.depth_multipliers = distinct_positive("timm space", "depth_multipliers", DEPTH_MULTIPLIERS if depth_multipliers is None else depth_multipliers, float)
            lists = {"channel_multipliers": self.channel_multipliers, "depth_multipliers": self.depth_multipliers}
        # model_args as JSON text: a spec's space_args must stay flat to hash and round-trip.
        super().__init__(family=family, model=self.model, **lists, model_args=json.dumps(self.model_args, sort_keys=True))
        # Build the smallest member on the meta device (shapes only, no memory or init cost), so a
        # model or model_args that timm refuses fails here, before any search work; once per
        # setting, as ArchSpec.build creates the space anew for every candidate.
        key = json.dumps(self.space_args, sort_keys=True)
        if key not in _CHECKED:
            with torch.device("meta"):
                self._network(self.smallest(), 2)
            _CHECKED.add(key)

    # ------------------------------------------------------------------ the SearchSpace interface

    @property
    def size(self) -> int:
        """How many choice combinations the space holds (canonical() may merge a few)."""
        if self.family == "resnet":
            return len(self.depths) ** STAGES * len(self.widths)
        return len(self.channel_multipliers) * len(self.depth_multipliers)

    def suggest(self, trial: optuna.Trial) -> ArchSpec:
        if self.family == "resnet":
            layers = [trial.suggest_categorical(f"stage{s}_layers", self.depths) for s in range(1, STAGES + 1)]
            return self.spec(layers=layers, width=trial.suggest_categorical("width", self.widths))
        return self.spec(
            channel_multiplier=trial.suggest_categorical("channel_multiplier", self.channel_multipliers),
            depth_multiplier=trial.suggest_categorical("depth_multiplier", self.depth_multipliers),
        )

    def build(self, spec: ArchSpec, num_classes: int) -> nn.Module:
        """The timm network of ``spec``, with random weights and declared feature points."""
        if spec.space != self.name:
            raise DasError(f"cannot build a {spec.space!r} architecture with the {self.name!r} space")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise DasError(f"num_classes must be a positive integer, got {num_classes!r}")
        model = self._network(spec, num_classes)
        model.feature_points = DeclaredPoints(tuple(timm_points(model, f"{self.model} ({spec})")))
        return model

    def enumerate(self) -> Iterator[ArchSpec]:
        """Every choice combination; resnet: stage 1's blocks vary slowest, the width fastest."""
        if self.family == "resnet":
            for layers in itertools.product(self.depths, repeat=STAGES):
                for width in self.widths:
                    yield self.spec(layers=layers, width=width)
        else:
            for cm, dm in itertools.product(self.channel_multipliers, self.depth_multipliers):
                yield self.spec(channel_multiplier=cm, depth_multiplier=dm)

    def canonical(self, spec: ArchSpec) -> str:
        """resnet: the spec (no two members are alike); multipliers: the network's parameter shapes.

        timm rounds channels to multiples of 8 and block repeats up to whole numbers, so two
        multipliers can give the same network; those get the same key and are scored once.
        """
        spec = self.spec(**dict(spec.choices))
        if self.family == "resnet":
            return spec.to_json()
        with torch.device("meta"):
            net = self._network(spec, 2)
        shapes = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
        return "timm-" + hashlib.sha1(repr(shapes).encode()).hexdigest()

    def spec(self, **choices: Any) -> ArchSpec:
        """A validated spec: resnet ``layers=(b1, b2, b3, b4), width=w``; else ``channel_multiplier``, ``depth_multiplier``."""
        return super().spec(**self._parse(choices))

    def smallest(self) -> ArchSpec:
        """The member with the fewest parameters and FLOPs: fewest blocks, narrowest stages."""
        if self.family == "resnet":
            return self.spec(layers=[min(self.depths)] * STAGES, width=min(self.widths))
        return self.spec(channel_multiplier=min(self.channel_multipliers), depth_multiplier=min(self.depth_multipliers))

    def largest(self) -> ArchSpec:
        """The member with the most parameters and FLOPs."""
        if self.family == "resnet":
            return self.spec(layers=[max(self.depths)] * STAGES, width=max(self.widths))
        return self.spec(channel_multiplier=max(self.channel_multipliers), depth_multiplier=max(self.depth_multipliers))

    # ------------------------------------------------------------------ helpers

    def _network(self, spec: ArchSpec, num_classes: int) -> nn.Module:
        """timm's network of ``spec`` (no feature points yet)."""
        import timm

        choices = self._parse(dict(spec.choices))
        try:
            if self.family == "resnet":
                width = choices["width"]
                return timm.create_model(
                    self.model, pretrained=False, num_classes=num_classes, layers=choices["layers"],
                    channels=tuple(width * 2**s for s in range(STAGES)), **self.model_args,
                )
            if self.family == "mobilenetv3":
                from timm.models.mobilenetv3 import _gen_mobilenet_v3 as generate
            else:
                from timm.models.efficientnet import _gen_efficientnet as generate
            return generate(
                self.model, channel_multiplier=choices["channel_multiplier"], depth_multiplier=choices["depth_multiplier"],
                pretrained=False, num_classes=num_classes, **self.model_args,
            )
        except (TypeError, ValueError, AssertionError, KeyError) as err:
            what = " ".join(str(err).split())[:200] or type(err).__name__
            raise DasError(
                f"timm cannot build {self.model} with model_args={self.model_args} ({what}); "
                "pass only arguments that this timm model takes"
            ) from None

    @staticmethod
    def _check_model(family: str, model: Any) -> str:
        import timm

        if family in GENERATOR_MODELS:
            accepted = GENERATOR_MODELS[family]
            if model not in accepted:
                raise DasError(
                    f"timm space model {model!r} is not built by timm's {family} generator; accepted: {', '.join(accepted)} "
                    "(the multipliers replace the _075/_100 and b1..b7 of the other names)"
                )
            return model
        accepted = timm.list_models(module="resnet")
        if model not in accepted:
            hint = close_names_hint(str(model), accepted, "timm.list_models(module='resnet')")
            raise DasError(f"timm space model {model!r} is not a timm ResNet: {hint}")
        return model

    def _parse(self, choices: dict[str, Any]) -> dict[str, Any]:
        if self.family == "resnet":
            if set(choices) != {"layers", "width"}:
                raise DasError(f"a timm resnet spec takes two choices, layers=[b1, b2, b3, b4] and width=w, got {sorted(choices)}")
            layers = choices["layers"]
            if isinstance(layers, str) or not isinstance(layers, Sequence) or len(layers) != STAGES:
                raise DasError(f"timm resnet layers must list one block count per stage ({STAGES}), got {layers!r}")
            for b in layers:
                _check_member("layers", b, self.depths, list(layers))
            _check_member("width", choices["width"], self.widths, choices["width"])
            return {"layers": tuple(int(b) for b in layers), "width": int(choices["width"])}
        if set(choices) != {"channel_multiplier", "depth_multiplier"}:
            raise DasError(f"a timm {self.family} spec takes two choices, channel_multiplier and depth_multiplier, got {sorted(choices)}")
        _check_member("channel_multiplier", choices["channel_multiplier"], self.channel_multipliers, choices["channel_multiplier"])
        _check_member("depth_multiplier", choices["depth_multiplier"], self.depth_multipliers, choices["depth_multiplier"])
        return {key: float(choices[key]) for key in ("channel_multiplier", "depth_multiplier")}


def _check_member(key: str, value: Any, accepted: tuple, shown: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value not in accepted:
        raise DasError(f"timm {key} {shown!r} has {value!r}; accepted: {', '.join(map(str, accepted))}")


def _model_args(value: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """``model_args`` as a plain dict: given as a mapping (YAML) or as the JSON a spec stores."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DasError(f"timm space model_args {value!r} is neither a mapping nor JSON of one, e.g. {{output_stride: 8}}") from None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise DasError(f"timm space model_args must map timm argument names to values, e.g. {{output_stride: 8}}, got {value!r}")
    reserved = sorted(_RESERVED & set(value))
    if reserved:
        raise DasError(
            f"timm space model_args may not set {', '.join(reserved)}: the space sets the depth, width and "
            "class count itself and never loads weights"
        )
    try:
        return json.loads(json.dumps(dict(value), sort_keys=True))
    except TypeError:
        raise DasError(f"timm space model_args values must be JSON values (numbers, strings, lists), got {value!r}") from None
