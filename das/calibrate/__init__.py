"""Distillation ground truth: students trained distilled and alone, to calibrate proxies against.

:func:`train_population` trains each student of a list twice from the same initial weights, with
DistillModule's default recipe on a teacher's cached outputs and alone, and appends each
student's accuracies and gain to a resumable results file.
"""

from das.calibrate.data import PopulationData
from das.calibrate.population import train_population
from das.calibrate.results import ResultsFile
from das.calibrate.teacher_cache import TeacherCache, build_teacher_cache, cached_modules, teacher_outputs
from das.calibrate.trainer import CachedDistillObjective, PairResult, Recipe, RunResult, train_pair, train_student

__all__ = [
    "CachedDistillObjective",
    "PairResult",
    "PopulationData",
    "Recipe",
    "ResultsFile",
    "RunResult",
    "TeacherCache",
    "build_teacher_cache",
    "cached_modules",
    "teacher_outputs",
    "train_pair",
    "train_population",
    "train_student",
]
