"""Create or resume the Optuna study behind a search, shared safely by any number of processes.

Three things make a run directory safe to share and to kill:

- the storage's journal file is locked with ``flock`` (:mod:`das.storage`), so a process
  killed while it holds the lock releases it and the next process goes on at once;
- :class:`das.search.ledger.Ledger` keeps the study at ``study.trials`` distinct scored
  architectures however many processes join: Optuna numbers trials atomically, so a trial that
  finds ``total`` scored trials numbered before it stops its process instead of running;
- :func:`release_dead_trials` stops counting a trial whose process died while it ran: on this
  machine at once, by its ``host:pid`` tag (a journal file has no heartbeat); on an RDB storage,
  another machine's dead worker by Optuna's heartbeat (:data:`das.storage.HEARTBEAT_S`).
  Every worker calls it at the start of each trial, so the architecture the dead trial was scoring
  is retried at once (:mod:`das.search.ledger`).

Trials that never finish (one made surplus by another process, one whose process died, one cut
short by Ctrl-C) are recorded as PRUNED: das never prunes otherwise. Finished trials that do not
count (a duplicate architecture, one over budget) are tagged so (:mod:`das.search.ledger`).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import optuna
from optuna.trial import TrialState

from das.errors import DasError, close_matches_hint
from das.search.ledger import ERROR

SAMPLERS = ("tpe", "random", "nsga2", "grid")



def check_sampler(name: str) -> None:
    if name not in SAMPLERS:
        hint = close_matches_hint(str(name), SAMPLERS)
        hint = f"{hint} " if hint.startswith("did you mean") else ""
        raise DasError(f"study.sampler={name!r} is not a sampler: {hint}accepted: {', '.join(SAMPLERS)}")


def make_sampler(name: str, seed: int, storage: optuna.storages.BaseStorage) -> SearchSampler:
    """The named sampler, tagging each trial of the study in ``storage`` with its worker (:class:`SearchSampler`).

    Optuna >= 5's TPE and NSGA-II read the constraints the objective sets with
    ``trial.set_constraint`` and rank over-budget trials as infeasible, so they steer away from
    them. ``grid`` asks Optuna for no parameter (:mod:`das.search.grid` hands out the members),
    so its sampler is never consulted.
    """
    check_sampler(name)
    if name == "tpe":
        return SearchSampler(optuna.samplers.TPESampler(seed=seed), storage)
    if name == "nsga2":
        return SearchSampler(optuna.samplers.NSGAIISampler(seed=seed), storage)
    return SearchSampler(optuna.samplers.RandomSampler(seed=seed), storage)


class SearchSampler(optuna.samplers.BaseSampler):
    """The configured sampler, plus two duties of the search's: tag each trial with its worker, replay a dead trial's params.

    - Each new trial is tagged with its worker (``host:pid``) the moment it exists: Optuna calls
      ``before_trial`` right after the storage creates a trial, before any sampling, so a process
      killed later always leaves a tagged trial that :func:`release_dead_trials` can judge by its
      pid. The tag is written through ``storage``, the storage the study was opened on.
    - A trial that retries a dead trial's architecture (:mod:`das.search.ledger`) is given the
      dead trial's params (:meth:`replay`): the space's ``suggest`` then draws the same
      architecture and the trial records the same params, so TPE and NSGA-II learn from it like
      any trial. This is what ``study.enqueue_trial`` does for a trial not yet created.

    Everything else is the wrapped sampler's.
    """

    def __init__(self, sampler: optuna.samplers.BaseSampler, storage: optuna.storages.BaseStorage) -> None:
        self.sampler = sampler
        self.storage = storage
        self.created: set[int] = set()  # numbers of this process's trials, even one a Ctrl-C cut off before its tag
        self.replays: dict[int, dict[str, Any]] = {}  # trial number -> the params it replays
        self._study_ids: dict[str, int] = {}

    def replay(self, trial: optuna.Trial, params: dict[str, Any]) -> None:
        """Make ``trial``'s ``suggest_*`` calls return ``params`` (a dead trial's), before its first one."""
        self.replays[trial.number] = dict(params)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.created.add(trial.number)
        if study.study_name not in self._study_ids:
            self._study_ids[study.study_name] = self.storage.get_study_id_from_name(study.study_name)
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self._study_ids[study.study_name], trial.number)
        self.storage.set_trial_user_attr(trial_id, "worker", worker_id())
        self.sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):  # type: ignore[no-untyped-def]
        if trial.number in self.replays:  # every param is replayed: the wrapped sampler is not consulted
            return {}
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):  # type: ignore[no-untyped-def]
        if trial.number in self.replays:
            return {}
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):  # type: ignore[no-untyped-def]
        replayed = self.replays.get(trial.number, {})
        if param_name in replayed:
            return replayed[param_name]
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):  # type: ignore[no-untyped-def]
        self.replays.pop(trial.number, None)
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()



def open_study(storage: optuna.storages.BaseStorage, name: str, sampler: str, seed: int,
               directions: list[str] | None = None) -> optuna.Study:
    """Create the study, or load it if it exists, so rerunning the same command resumes.

    Raises:
        DasError: when the stored study optimises other directions (one objective then, several now).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = directions or ["maximize"]
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, sampler=make_sampler(sampler, seed, storage),
            directions=directions, load_if_exists=True,
        )
    except (ValueError, RuntimeError) as err:
        raise DasError(f"cannot open study {name!r}: {err}") from None
    stored = [d.name.lower() for d in study.directions]
    if stored != directions:
        raise DasError(
            f"study {name!r} in this run_dir optimises {len(stored)} objective(s) ({', '.join(stored)}), this run "
            f"{len(directions)} ({', '.join(directions)}); use a new --run_dir or the original study.objective(s)"
        )
    return study


# --------------------------------------------------------------------------- sharing the study


def worker_id() -> str:
    """This process, as ``host:pid``; stored on each trial so a later run can tell if it died."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's worker: its storage's heartbeat (RDB) has to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def release_dead_trials(study: optuna.Study, untagged_after: timedelta = timedelta(seconds=5)) -> int:
    """Stop counting RUNNING trials whose process has died; return how many (on this machine).

    A trial is tagged with its worker by :class:`SearchSampler` as the storage creates it; one
    still untagged ``untagged_after`` later lost its process in that gap (or was made by another
    tool). Such trials are recorded as PRUNED. On an RDB storage, trials whose heartbeat stopped
    (another machine's dead worker) are failed as well (Optuna's ``fail_stale_trials``). The
    search calls this at its start and end, and every worker at the start of each trial.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a no-op on a storage without a heartbeat (a journal file)
    now = datetime.now()

    def dead(trial: optuna.trial.FrozenTrial) -> bool:
        worker = trial.user_attrs.get("worker")
        if worker:
            return not _alive(worker)
        return trial.datetime_start is not None and now - trial.datetime_start > untagged_after

    return _prune_running(study, dead)


def release_own_trials(study: optuna.Study) -> int:
    """Stop counting this process's trials still RUNNING after its optimize loop (Ctrl-C between
    Optuna creating a trial and running it leaves one); return how many."""
    sampler = study.sampler
    if not isinstance(sampler, SearchSampler):
        return 0
    return _prune_running(study, lambda trial: trial.number in sampler.created)


def _prune_running(study: optuna.Study, which: Callable[[optuna.trial.FrozenTrial], bool]) -> int:
    """Record the RUNNING trials ``which`` picks as PRUNED (not counted); return how many."""
    released = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if which(trial):
            try:
                study.tell(trial.number, state=TrialState.PRUNED)
                released += 1
            except (ValueError, RuntimeError):  # finished meanwhile
                pass
    return released


@contextmanager
def stop_on_interrupt(study: optuna.Study) -> Iterator[dict[str, bool]]:
    """First Ctrl-C: let the running trial finish, then stop the study; a second one interrupts at once.

    A KeyboardInterrupt raised at an arbitrary point can land inside Optuna's own bookkeeping
    (seen: while it records a finished trial, which Optuna 5.0 then reports as an
    UnboundLocalError with a traceback). Stopping between trials never does. Yields a dict whose
    ``"stopped"`` says whether Ctrl-C was pressed.
    """
    state = {"stopped": False}
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield state
        return

    def on_interrupt(_signum: int, _frame: object) -> None:
        if state["stopped"]:
            raise KeyboardInterrupt
        state["stopped"] = True
        try:
            study.stop()
        except RuntimeError:  # outside the optimize loop: nothing left to stop
            pass

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


class Interruptible:
    """Wrap an objective for ``study.optimize``: tag the trial with its worker, and make Ctrl-C inside it a pruned trial.

    Ctrl-C inside a trial stops the study and records the trial as PRUNED (not counted), and
    sets ``interrupted``. Which trials count is the objective's ledger's business
    (:mod:`das.search.ledger`).
    """

    def __init__(self, objective: Callable[[optuna.Trial], Any]) -> None:
        self.objective = objective
        self.interrupted = False

    def __call__(self, trial: optuna.Trial) -> Any:
        trial.set_user_attr("worker", worker_id())
        try:
            return self.objective(trial)
        except KeyboardInterrupt:
            self.interrupted = True
            trial.study.stop()
            raise optuna.TrialPruned("interrupted") from None
        except optuna.TrialPruned:
            raise
        except Exception as err:
            # It failed in a live process: it keeps its place rather than pass for a dead worker's (ledger.ERROR).
            trial.set_user_attr(ERROR, f"{type(err).__name__}: {' '.join(str(err).split())[:200]}")
            raise
