"""What a search optimises: one proxy, or several traded off against each other.

Every das proxy is "higher is better" (:mod:`das.proxies.base`), so a single objective is always
maximised, ``params`` included (the size baseline of the zero-cost literature picks the largest
network). Several objectives (``study.objectives: [ensemble, params]``) ask for the trade-off
between a score and the student's size instead, so there the size terms ``params`` and ``flops``
are minimised and every other proxy maximised; the study then has one Optuna direction per
objective (Akiba et al., KDD 2019) and its answer is the Pareto front (Deb et al., "A fast and
elitist multiobjective genetic algorithm: NSGA-II", IEEE TEC 2002).
"""

from __future__ import annotations

import math

from das.errors import DasError
from das.proxies import PROXIES
from das.search.config import CalibrateConfig, StudyConfig

#: Proxies that measure size: minimised when they are one of several objectives.
SIZE_TERMS = ("params", "flops")
#: ``study.objective``'s default: ``objectives`` may be given only while it is left so.
DEFAULT_OBJECTIVE = StudyConfig.objective


def objective_names(study: StudyConfig) -> list[str]:
    """The objectives in order: ``study.objectives`` when given, else ``[study.objective]``."""
    return list(study.objectives) if study.objectives else [study.objective]


def directions(names: list[str]) -> list[str]:
    """Optuna's direction of each objective (see the module docstring)."""
    multi = len(names) > 1
    return ["minimize" if multi and name in SIZE_TERMS else "maximize" for name in names]


def worst(direction: str) -> float:
    """The value an unscored (over-budget) trial reports: the worst there is in ``direction``.

    Optuna fails a trial only on NaN; ±inf is a valid value, and TPE and NSGA-II rank a trial with
    positive constraints as infeasible before they read its value.
    """
    return -math.inf if direction == "maximize" else math.inf


def check_objectives(study: StudyConfig, calibrate: CalibrateConfig) -> None:
    """Refuse objectives that cannot be optimised together, in one line each."""
    given = study.objectives
    if given is None:
        return
    if isinstance(given, str) or not isinstance(given, (list, tuple)) or not all(isinstance(n, str) for n in given):
        raise DasError(f"study.objectives={given!r} must be a list of proxy names, e.g. [ensemble, params]")
    if len(given) < 2:
        raise DasError(f"study.objectives={list(given)!r} names fewer than two; for one, use study.objective")
    for name in given:
        PROXIES.get(name)
    repeated = sorted({n for n in given if list(given).count(n) > 1})
    if repeated:
        raise DasError(f"study.objectives={list(given)!r} names {', '.join(repeated)} twice; name each objective once")
    if all(n in SIZE_TERMS for n in given):
        raise DasError(f"study.objectives={list(given)!r} are all size terms (minimised): add a score to trade them against, e.g. [ensemble, params]")
    if study.objective not in (DEFAULT_OBJECTIVE, given[0]):
        raise DasError(
            f"study.objective={study.objective!r} and study.objectives={list(given)!r} are both given; "
            "give one: objective for a single proxy, objectives for a trade-off"
        )
    if calibrate.students:
        raise DasError(
            f"calibrate.students={calibrate.students} chooses one objective, but study.objectives={list(given)!r} "
            "asks for several; set calibrate.students 0, or drop study.objectives"
        )
