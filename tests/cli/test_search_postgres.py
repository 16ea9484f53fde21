"""Workers sharing a study through a real PostgreSQL server, which the test starts itself on loopback.

No mocks: ``initdb`` and ``pg_ctl`` from the Debian ``postgresql`` package (or on PATH) make a
server in a temporary directory, its socket there too, listening on 127.0.0.1 only; it is
stopped and removed afterwards (:mod:`benchmarks.pgserver`). ``initdb`` refuses to run as root,
so as root the server runs as the ``postgres`` user (``runuser``). The test skips only where no
server binary exists (``.ci/run`` installs one); the Python driver is in the ``dev`` extra.
"""

from __future__ import annotations

from collections.abc import Iterator

import optuna
import pytest
from optuna.trial import TrialState

from benchmarks.pgserver import server_bin, throwaway_server
from das.storage import make_storage
from tests.cli.test_search_cli import scored_keys, start, tiny  # noqa: F401  (tiny is a fixture)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT/das`` on a server of its own, stopped and deleted afterwards."""
    if server_bin() is None:
        pytest.skip("no PostgreSQL server binary (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or on PATH: apt-get install postgresql")
    with throwaway_server() as url:
        yield url


def test_two_workers_on_a_postgresql_study_score_exactly_study_trials_once_each(tiny, tmp_path, postgres_url) -> None:
    run = tmp_path / "run"
    proc = start(["--run_dir", str(run), *tiny, "--study.storage", postgres_url, "--study.trials", "16",
                  "--budget.max_params", "9000", "--workers", "2"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"in {postgres_url}" in out  # the study is on the server, not in a journal file
    assert not (run / "study.journal").exists()
    done = optuna.load_study(study_name="das", storage=make_storage(postgres_url, run)).trials
    keys = scored_keys(done)
    assert len(keys) == 16 == len(set(keys))  # exactly study.trials, none scored twice
    assert len({t.user_attrs["worker"] for t in done}) == 2 and TrialState.RUNNING not in [t.state for t in done]
    assert (run / "best_arch.json").is_file() and (run / "leaderboard.csv").is_file()
