"""Where a search's study lives: a journal file in the run directory, another journal file, or an RDB such as PostgreSQL.

A journal file is locked with ``flock`` on an absolute path, so a process killed while it holds
the lock (even ``kill -9``) releases it with its file descriptors and the next process goes on
at once (Optuna's default symlink lock, given a relative path, leaves a dangling link whose
stale-lock timeout never fires, and the rerun spins forever). An RDB storage fails the trials of
a worker that died by Optuna's heartbeat (:data:`HEARTBEAT_S`, :data:`GRACE_S`).
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from das.errors import DasError

STORAGE_FORMS = "a journal file (PATH.journal or PATH.log) or an RDB URL such as postgresql://USER:PASSWORD@HOST/DB or sqlite:///FILE.db"
#: An RDB storage's heartbeat: each running trial says it is alive every HEARTBEAT_S seconds, and
#: one silent for GRACE_S is failed by the next trial any worker starts (its architecture retried).
HEARTBEAT_S, GRACE_S = 60, 180
#: Seconds to wait for a database server to answer before saying it cannot be reached.
CONNECT_TIMEOUT_S = 10


class FlockLock:
    """An exclusive ``flock`` on ``PATH.flock``: the kernel releases it when its process dies.

    It has the journal lock interface (``acquire``, ``release``) that JournalFileBackend calls;
    Optuna exports no base class for it.

    Optuna's file locks are files that a killed process leaves behind; they are broken only after
    a grace period. A flock cannot go stale, so nobody ever waits for a dead process.
    """

    def __init__(self, journal_path: str) -> None:
        self._path = journal_path + ".flock"
        self._fd: int | None = None
        self._thread_lock = threading.Lock()  # flock is per open file; serialise this process's threads too

    def acquire(self) -> bool:
        import fcntl

        self._thread_lock.acquire()
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        import fcntl

        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._thread_lock.release()


def journal_lock(path: str | Path) -> FlockLock | JournalFileOpenLock:
    """The lock of the journal file at ``path`` (made absolute): a flock, or, without fcntl, a 10 s grace lock."""
    path = os.path.abspath(path)
    try:
        import fcntl  # noqa: F401  (POSIX only)

        return FlockLock(path)
    except ImportError:
        return JournalFileOpenLock(path, grace_period=10)  # appends take milliseconds; 10 s means its holder died


def journal_storage(path: str | Path) -> JournalStorage:
    """A journal file storage at an absolute ``path``, locked with :func:`journal_lock`."""
    path = os.path.abspath(path)
    return JournalStorage(JournalFileBackend(path, lock_obj=journal_lock(path)))  # type: ignore[arg-type]


def _split_password(url: str) -> tuple[str, str | None]:
    """``url`` with its password (``[scheme://]user:PASSWORD@host...``) replaced by ***, and the password."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url, None
    user, _, password = userinfo.partition(":")
    return f"{scheme}{sep}{user}:***@{host}", password or None


def hide_password(url: str) -> str:
    """``url`` with its password replaced by ***: a password never appears in a message."""
    return _split_password(url)[0]


def rdb_url(storage: str) -> str:
    """The SQLAlchemy URL for ``storage``: a bare ``postgresql://`` gets the psycopg (3) driver when it is installed.

    das's ``postgres`` extra installs psycopg; SQLAlchemy 2.0 would otherwise look for psycopg2
    (2.1 looks for psycopg itself). A URL that names its driver (``postgresql+psycopg2://``) is kept.
    """
    scheme, sep, rest = storage.partition("://")
    if scheme == "postgresql" and importlib.util.find_spec("psycopg") is not None:
        return f"postgresql+psycopg{sep}{rest}"
    return storage


def make_storage(storage: str | None, run_dir: Path) -> optuna.storages.BaseStorage:
    """A journal file in the run directory unless a storage is given.

    A journal file is safe for several worker processes on one machine (SQLite is not); an RDB
    URL such as PostgreSQL serves workers on several machines, with Optuna's heartbeat failing
    the trials of a worker that died (:data:`HEARTBEAT_S`, :data:`GRACE_S`).
    """
    if storage is None:
        return journal_storage(run_dir / "study.journal")
    if storage.endswith((".journal", ".log")) and "://" not in storage:
        Path(storage).parent.mkdir(parents=True, exist_ok=True)
        return journal_storage(storage)
    shown = hide_password(storage)
    scheme = storage.partition("://")[0]
    if "://" not in storage or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        raise DasError(f"study.storage={shown!r} is neither a journal file nor a database URL; accepted: {STORAGE_FORMS}")
    if scheme == "postgres":  # Heroku's spelling, which SQLAlchemy does not accept
        raise DasError(f"study.storage={shown!r}: the scheme is postgresql://, not postgres:// (e.g. postgresql://USER:PASSWORD@HOST/DB)")
    url = rdb_url(storage)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}  # a search outlives idle connections the server drops
    if scheme.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}  # an unreachable host fails, not hangs
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    except Exception as err:  # sqlalchemy and DB drivers raise many types; all mean "cannot use this URL"
        reason = " ".join(str(err).split("\n")[0].split())
        password = _split_password(storage)[1]
        if password:
            reason = reason.replace(password, "***")
        if isinstance(err, ImportError) and scheme.startswith("postgresql"):
            raise DasError(f"cannot open study.storage={shown!r}: no PostgreSQL driver is installed; "
                           'pip install -e ".[postgres]" (psycopg) on every machine that runs a worker') from None
        raise DasError(f"cannot open study.storage={shown!r} ({type(err).__name__}: {reason}); accepted: {STORAGE_FORMS}") from None
