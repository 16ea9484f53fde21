"""A throwaway PostgreSQL server on loopback, in a temporary directory: for the tests and the search benchmarks.

``initdb`` and ``pg_ctl`` come from the Debian ``postgresql`` package (``/usr/lib/postgresql/*/bin``)
or PATH. ``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` user
(``runuser``; the package creates that user). The socket lives in the temporary directory too
(``-k``), and the server listens on 127.0.0.1 only. Durability is off (``fsync=off``): it holds
nothing worth keeping.

    with throwaway_server() as url:   # postgresql://postgres@127.0.0.1:PORT/das
        ...
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ServerError(RuntimeError):
    """The server could not be made or started (the message has the command's output and the server log)."""


def server_bin() -> Path | None:
    """The folder of ``initdb``, ``pg_ctl`` and ``postgres``: the newest /usr/lib/postgresql/*/bin, else PATH; None if none."""
    def version(folder: str) -> tuple[int, ...]:
        return tuple(int(p) for p in Path(folder).parent.name.split(".") if p.isdigit())

    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all(os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent  # pg_ctl finds postgres beside its real path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def throwaway_server(database: str = "das") -> Iterator[str]:
    """Start a server with one empty ``database``; yield its URL; stop it and delete everything.

    Raises:
        ServerError: no server binary, no ``postgres`` user or ``runuser`` when root, or a step failed.
    """
    folder = server_bin()
    if folder is None:
        raise ServerError("no PostgreSQL server binary (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or on PATH: "
                          "apt-get install postgresql")
    as_server: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="das-pg-"))  # under /tmp: a pytest tmp_path's parents only root may enter
    try:
        if os.geteuid() == 0:  # initdb refuses root
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerError("running as root, the server needs the 'postgres' user (the Debian postgresql package creates it)") from None
            if shutil.which("runuser") is None:
                raise ServerError("running as root, starting the server as the postgres user needs runuser (util-linux)")
            os.chown(root, user.pw_uid, user.pw_gid)
            as_server = ["runuser", "-u", "postgres", "--"]
        port = _free_port()
        data, log = root / "data", root / "server.log"

        def run(*cmd: str | Path) -> None:
            done = subprocess.run([*as_server, *map(str, cmd)], capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                server_log = log.read_text() if log.exists() else ""
                raise ServerError(f"{' '.join(map(str, cmd))} failed:\n{done.stdout}{done.stderr}{server_log}")

        run(folder / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        run(folder / "pg_ctl", "-D", data, "-l", log, "-o", f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off",
            "-w", "-t", "60", "start")
        try:
            run(folder / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
            yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
        finally:
            run(folder / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
