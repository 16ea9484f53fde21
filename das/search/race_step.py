"""The search's finalist race: after the zero-cost trials, distil a few finalists briefly and keep the best.

On the committed NB201 ground truth, racing the top 4 in budget plus the largest in budget on
10-epoch runs picked with a mean regret of 0.17 points against 1.35 for the largest alone
(docs/results.md, "Selection replayed on the committed populations"): a few epochs of the real
thing separate a handful of finalists that zero-cost scores cannot. With ``race.finalists`` N > 0,
after the trials the search

1. takes the N best-ranked distinct students within the budget (the leaderboard's order) and the
   largest within the budget (always: the size baseline races too);
2. distils them from the search's teacher with :func:`das.calibrate.race.run_race`: das.calibrate's
   recipe for ``race.epochs`` epochs on the teacher's cached outputs, tested on the **validation**
   split (never the test split), successive halving by ``race.eta``;
3. makes the winner ``best_arch.json`` and writes every finalist's validation accuracy and epochs
   into the leaderboard (``race_val_acc``, ``race_epochs``).

Each finalist's rung is appended to ``RUN_DIR/race/<finalists digest>/race.jsonl`` as it is
measured, so an interrupted race resumes where it stopped and a finished one is read back; a
study that has since ranked other finalists races them in their own directory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from das.calibrate.population import population_settings
from das.calibrate.race import RaceResult, run_race
from das.calibrate.teacher_cache import build_teacher_cache, cached_modules
from das.calibrate.trainer import Recipe
from das.data import DasDataModule
from das.errors import DasError
from das.features import feature_points
from das.search.calibration_step import CHANNELS_LAST
from das.search.short_runs import check_short_runs, is_integer, population_data
from das.search.config import RaceConfig
from das.spec import ArchSpec

RACE_DIR = "race"


def check_race(cfg: RaceConfig, val_fraction: float) -> None:
    """Refuse race values that cannot work, one line each, before anything is loaded."""
    if not is_integer(cfg.finalists) or cfg.finalists < 0 or cfg.finalists == 1:
        raise DasError(f"race.finalists={cfg.finalists!r} must be 0 (off) or at least 2: the best-ranked students that race "
                       "besides the largest in budget")
    if not cfg.finalists:
        return
    if not is_integer(cfg.eta) or cfg.eta < 2:
        raise DasError(f"race.eta={cfg.eta!r} must be an integer >= 2: 1/eta of the finalists go on at each rung")
    check_short_runs("race", cfg, val_fraction, "finalist")


def finalists(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The ``n`` best-ranked feasible rows with a finite objective, then the largest feasible row if it is not among them."""
    feasible = [r for r in rows if r["feasible"]]
    ranked = [r for r in feasible if r.get("rank") is not None][:n]
    largest = max(feasible, key=lambda r: (r["params"], -r["rank"]), default=None)
    if largest is not None and all(r["spec"] != largest["spec"] for r in ranked):
        ranked.append(largest)
    return ranked


@dataclass(frozen=True)
class Race:
    """A finished race and what it cost."""

    result: RaceResult
    rows: list[dict[str, Any]]  # the finalists' leaderboard rows, in race order
    minutes: float
    directory: Path

    @property
    def winner_spec(self) -> str:
        return self.rows[[str(f.spec) for f in self.result.finalists].index(str(self.result.winner.spec))]["spec"]

    def summary(self, epochs: int) -> dict[str, Any]:
        largest = max(self.result.finalists, key=lambda f: f.params)
        full = largest.flops * epochs
        return {**self.result.to_dict(), "minutes": round(self.minutes, 2), "directory": str(self.directory),
                "cost_in_largest_runs": self.result.flop_epochs / full if full else None}


def run_race_step(cfg: RaceConfig, rows: list[dict[str, Any]], *, run_dir: Path, data: DasDataModule, teacher_name: str,
                  teacher: torch.nn.Module, num_classes: int, device: torch.device, objective: str,
                  log: Callable[[str], None] = print) -> Race | None:
    """Race the finalists of ``rows`` (see the module docstring); None when fewer than two students are within the budget."""
    chosen = finalists(rows, cfg.finalists)
    if len(chosen) < 2:
        log(f"race: {len(chosen)} student(s) within the budget: nothing to race; best_arch.json is the objective's pick")
        return None
    specs = [ArchSpec.from_json(r["spec"]) for r in chosen]
    population = population_data(data, cfg.train_images, cfg.seed)
    recipe = Recipe(epochs=cfg.epochs, batch_size=data.hparams["batch_size"])
    digest = hashlib.sha256("\n".join(s.to_json() for s in specs).encode()).hexdigest()[:12]
    directory = run_dir / RACE_DIR / digest
    settings = {**population_settings(teacher_name, teacher, population, recipe, cfg.seed, CHANNELS_LAST),
                "kind": "das.search.race", "objective": objective}
    example = population.normalise(population.train.images[:2]).to(device)
    modules = cached_modules(recipe.feature_pairs, feature_points(teacher, example)) if recipe.uses_features else []
    cache = build_teacher_cache(teacher, population, modules, recipe.augment, recipe.views, cfg.seed, recipe.map_dtype, device=device,
                                spill_dir=run_dir)  # a cache past MEMORY_BYTES is mapped from (unlinked) files there
    largest = chosen[-1]["arch"] if len(chosen) > cfg.finalists else "among them"
    log(f"race: {len(specs)} finalists ({cfg.finalists} best by {objective}, the largest in budget {largest}), up to "
        f"{cfg.epochs} epoch(s) each on {len(population.train)} training images, judged on {len(population.test)} validation "
        f"images ({directory})")
    result = run_race(specs, cache=cache, data=population, recipe=recipe, num_classes=num_classes, directory=directory,
                      settings=settings, seed=cfg.seed, eta=cfg.eta, device=device, channels_last=CHANNELS_LAST, log=log)
    race = Race(result, chosen, result.seconds / 60, directory)
    summary = race.summary(cfg.epochs)
    log(f"race: {result.winner.spec} wins at {result.winner.last_acc:.2f}% validation accuracy after {result.winner.epochs} epoch(s); "
        f"the race trained {sum(f.epochs for f in result.finalists)} student-epochs in {race.minutes:.1f} min, "
        f"{summary['cost_in_largest_runs']:.2f}× one {cfg.epochs}-epoch distillation of the largest finalist")
    return race
