"""Architecture search: an Optuna study over a space of students, scored by zero-cost proxies."""

from das.search.config import BudgetConfig, CalibrateConfig, RaceConfig, SpaceConfig, StudyConfig, TeacherConfig
from das.search.run import run_search

__all__ = ["BudgetConfig", "CalibrateConfig", "RaceConfig", "SpaceConfig", "StudyConfig", "TeacherConfig", "run_search"]
