"""The recipe a trial draws: the logit loss and its weight and temperature, the cosine scale, the pairing, the learning rate.

A trial's params (Optuna's, define-by-run) become the three ``model`` settings a recipe is made of,
``losses``, ``feature_pairs`` and ``lr``, starting from what ``model.*`` configures:

- ``losses``: ce with weight ``total · (1 − w)`` and the chosen logit loss (kd, or any registered
  loss that reads the teacher's logits) with weight ``total · w``, where ``total`` is model.losses'
  own weight of ce plus its logit loss (1 in the shipped configs: a weighted average, so a
  distilled run steps like the run alone); ce keeps its options (label smoothing), the logit loss
  the configured temperature unless the trial draws one; the cosine term ``{weight: 1, scale: s}``,
  or none when the trial turns it off; every other term of model.losses (relation, fitnet,
  bn_l1) as written;
- ``feature_pairs``: ``final`` or ``stages``, drawn only when a feature loss is on;
- ``lr``: model.lr times the drawn factor.

Values are rounded to 4 significant digits before a trial trains, so the recipe written to
tuned.yaml is exactly the one that was judged. Conditional params (the scale only when the cosine
term is on, the temperature only for a loss that has one) are what Optuna's define-by-run space is
for: TPE models each where it is drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna

from das.distill.losses import LOSSES, LossConfig, LossSpec, LossTerm
from das.distill.objective import FEATURE_INPUTS
from das.tune.config import TuneConfig, logit_losses

ON, OFF = "on", "off"


def significant(value: float, digits: int = 4) -> float:
    """``value`` rounded to ``digits`` significant digits (a readable YAML, and exactly what trained)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


@dataclass(frozen=True)
class RecipeSpace:
    """What a trial may choose, around the configured recipe (``model.losses``, ``model.feature_pairs``, ``model.lr``)."""

    cfg: TuneConfig
    losses: LossConfig
    feature_pairs: Any
    lr: float

    @property
    def spec(self) -> LossSpec:
        return LossSpec.from_config(self.losses)

    def _base_logit(self) -> LossTerm | None:
        """The configured logit loss term (kd in the shipped configs), if any."""
        names = set(logit_losses())
        return next((t for t in self.spec.terms if t.name in names and t.weight > 0), None)

    def _total(self) -> float:
        ce, logit = self.spec.term("ce"), self._base_logit()
        total = (ce.weight if ce else 0.0) + (logit.weight if logit else 0.0)
        return total if total > 0 else 1.0

    def _other_features(self) -> bool:
        """Whether a term the study leaves alone reads feature maps (relation, fitnet)."""
        tuned = {"cosine"} if self.cfg.cosine_scale is not None else set()
        return any(t.weight > 0 and set(t.loss.needs) & FEATURE_INPUTS for t in self.spec.terms if t.name not in tuned)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Draw a trial's params (define-by-run) and return them."""
        c = self.cfg
        logit = trial.suggest_categorical("logit_loss", list(c.logit_losses))
        if c.logit_weight is not None:
            trial.suggest_float("logit_weight", *c.logit_weight)
        if c.temperature is not None and "temperature" in LOSSES.get(logit).defaults:
            trial.suggest_float("temperature", *c.temperature)
        cosine_on = False
        if c.cosine_scale is not None:
            cosine_on = (trial.suggest_categorical("cosine", [ON, OFF]) if c.cosine_off else ON) == ON
            if cosine_on:
                trial.suggest_float("cosine_scale", *c.cosine_scale, log=True)
        else:
            cosine_on = (term := self.spec.term("cosine")) is not None and term.weight > 0
        if c.feature_pairs is not None and (cosine_on or self._other_features()):
            trial.suggest_categorical("feature_pairs", list(c.feature_pairs))
        if c.lr_factor is not None:
            trial.suggest_float("lr_factor", *c.lr_factor, log=True)
        return dict(trial.params)

    def recipe(self, params: dict[str, Any]) -> dict[str, Any]:
        """The ``model`` settings ``params`` stand for: ``{"losses": ..., "feature_pairs": ..., "lr": ...}``."""
        spec, base_logit, total = self.spec, self._base_logit(), self._total()
        chosen = params["logit_loss"]
        w = params.get("logit_weight", base_logit.weight / total if base_logit else 0.5)
        options: dict[str, float] = dict(base_logit.options) if base_logit and base_logit.name == chosen else {}
        if "temperature" in LOSSES.get(chosen).defaults:
            if "temperature" in params:
                options["temperature"] = params["temperature"]
            elif base_logit is not None and "temperature" in dict(base_logit.options):
                options["temperature"] = base_logit.option("temperature")
        options = {k: significant(v) for k, v in options.items()}
        ce = spec.term("ce")
        ce_term = LossTerm("ce", significant(total * (1 - w)), ce.options if ce else ())
        logit_term = LossTerm(chosen, significant(total * w), tuple(options.items()))
        tune_cosine = self.cfg.cosine_scale is not None
        cosine_term = None
        if tune_cosine and params.get("cosine", ON) == ON and "cosine_scale" in params:
            cosine_term = LossTerm("cosine", 1.0, (("scale", significant(params["cosine_scale"])),))
        logit_names = set(logit_losses())
        terms = [ce_term, logit_term]
        for term in spec.terms:
            if term.name == "ce" or term.name in logit_names:
                continue
            if term.name == "cosine" and tune_cosine:
                continue
            terms.append(term)
        if cosine_term is not None:
            terms.append(cosine_term)
        lr = significant(self.lr * params["lr_factor"]) if "lr_factor" in params else self.lr
        pairs = params.get("feature_pairs", self.feature_pairs)
        return {"losses": LossSpec(tuple(terms)).to_config(), "feature_pairs": pairs, "lr": lr}

    def default_params(self) -> dict[str, Any] | None:
        """The configured recipe as a trial's params, or None when the ranges leave it out (it is then not tried first)."""
        c, spec, base_logit, total = self.cfg, self.spec, self._base_logit(), self._total()
        if base_logit is None or base_logit.name not in c.logit_losses:
            return None
        params: dict[str, Any] = {"logit_loss": base_logit.name}
        if c.logit_weight is not None:
            params["logit_weight"] = base_logit.weight / total
        if c.temperature is not None and "temperature" in base_logit.loss.defaults:
            params["temperature"] = base_logit.option("temperature")
        cosine = spec.term("cosine")
        cosine_on = cosine is not None and cosine.weight > 0
        if c.cosine_scale is not None:
            if not cosine_on and not c.cosine_off:
                return None
            if c.cosine_off:
                params["cosine"] = ON if cosine_on else OFF
            if cosine_on:
                params["cosine_scale"] = cosine.weight * cosine.option("scale")
        if c.feature_pairs is not None and (cosine_on or self._other_features()):
            if self.feature_pairs not in c.feature_pairs:
                return None
            params["feature_pairs"] = self.feature_pairs
        if c.lr_factor is not None:
            params["lr_factor"] = 1.0
        ranges = {"logit_weight": c.logit_weight, "temperature": c.temperature, "cosine_scale": c.cosine_scale, "lr_factor": c.lr_factor}
        for key, bounds in ranges.items():
            if key in params and not bounds[0] <= params[key] <= bounds[1]:
                return None
        return params

    def anchor_params(self) -> list[tuple[float, dict[str, Any]]]:
        """``tune.anchors`` as trials' params: the configured recipe with only the cosine scale changed.

        An anchor equal to the configured recipe is left out (trial 0 is it); with the configured
        recipe outside the ranges there are none (an anchor is the configured recipe plus one change).
        A pairing is drawn only when a feature loss is on, so an anchor turning the cosine term on
        takes model.feature_pairs (or the first allowed pairing when that one is not allowed), and one
        turning it off drops the pairing unless another term reads feature maps.
        """
        base = self.default_params()
        if base is None or not self.cfg.anchors:
            return []
        return [(float(scale), params) for scale in self.cfg.anchors if (params := self.scale_params(float(scale), base)) != base]

    def configured_scale(self) -> float | None:
        """The configured recipe's cosine scale as the study's line holds it (None when the cosine term is off or not tuned)."""
        base = self.default_params()
        return None if base is None or "cosine_scale" not in base else float(base["cosine_scale"])

    def scale_params(self, scale: float, base: dict[str, Any] | None = None) -> dict[str, Any]:
        """The configured recipe's params (``base``) with only the cosine scale changed to ``scale`` (0: off)."""
        base = self.default_params() if base is None else base
        if base is None:
            raise ValueError("the configured recipe lies outside the ranges: it has no line of cosine scales")
        c = self.cfg
        params = {k: v for k, v in base.items() if k not in ("cosine", "cosine_scale", "feature_pairs")}
        on = scale > 0
        if c.cosine_off:
            params["cosine"] = ON if on else OFF
        if on:
            params["cosine_scale"] = float(scale)
        if c.feature_pairs is not None and (on or self._other_features()):
            params["feature_pairs"] = base.get("feature_pairs", self.feature_pairs if self.feature_pairs in c.feature_pairs
                                               else c.feature_pairs[0])
        return params


def describe(recipe: dict[str, Any]) -> str:
    """A recipe in one short line: ``ce 0.39, kd 0.61 (T 3.2), cosine 215, stages, lr 0.071``."""
    parts = []
    for name, value in recipe["losses"].items():
        if isinstance(value, dict):
            opts = ", ".join(f"{'T' if k == 'temperature' else k} {v:g}" for k, v in value.items() if k not in ("weight", "scale"))
            weight = value.get("weight", 1.0)
            shown = f"{name} {weight * value['scale']:g}" if "scale" in value else f"{name} {weight:g}"
            parts.append(f"{shown} ({opts})" if opts else shown)
        else:
            parts.append(f"{name} {value:g}")
    pairs = recipe["feature_pairs"] if isinstance(recipe["feature_pairs"], str) else "named pairs"
    return f"{', '.join(parts)}; {pairs}; lr {recipe['lr']:g}"
