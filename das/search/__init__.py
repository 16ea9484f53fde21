"""Architecture search: an Optuna study over a space of students, scored by zero-cost proxies."""

from das.search.config import BudgetConfig, CalibrateConfig, SpaceConfig, StudyConfig, TeacherConfig
from das.search.run import run_search

__all__ = ["BudgetConfig", "CalibrateConfig", "SpaceConfig", "StudyConfig", "TeacherConfig", "run_search"]
