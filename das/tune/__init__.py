"""Tuning the distillation recipe for a teacher–student pair: an Optuna study of short distillations on the validation split.

train.py runs it before the final run when ``tune.trials`` > 0 (:mod:`das.tune.command`).
"""

from das.tune.config import TuneConfig
from das.tune.space import RecipeSpace
from das.tune.study import RecipeStudy, TuneResult

__all__ = ["RecipeSpace", "RecipeStudy", "TuneConfig", "TuneResult"]
