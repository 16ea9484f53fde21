"""Create or resume the Optuna study behind a search."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from das.errors import DasError

SAMPLERS = ("tpe", "random")


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # Optuna >= 5 TPE reads the constraints the objective sets with trial.set_constraint and
        # models over-budget trials as infeasible, so it steers away from them.
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise DasError(f"unknown sampler {name!r}: accepted {', '.join(SAMPLERS)}")


def make_storage(storage: str | None, run_dir: Path) -> optuna.storages.BaseStorage | str:
    """A journal file in the run directory unless a storage URL is given.

    A journal file is safe for several worker processes on one machine (SQLite is not); an RDB
    URL such as PostgreSQL serves workers on several machines.
    """
    if storage is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(run_dir / "study.journal")))
    if storage.endswith((".journal", ".log")):
        return JournalStorage(JournalFileBackend(storage))
    return storage


def open_study(storage: optuna.storages.BaseStorage | str, name: str, sampler: str, seed: int) -> optuna.Study:
    """Create the study, or load it if it exists, so rerunning the same command resumes."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(
            storage=storage, study_name=name, sampler=make_sampler(sampler, seed),
            direction="maximize", load_if_exists=True,
        )
    except (ValueError, ImportError, RuntimeError) as err:
        raise DasError(f"cannot open study {name!r} in storage {storage!r}: {err}") from None
