"""A throwaway PostgreSQL cluster for the tests and `make cluster-demo`: ``initdb`` in a
temporary folder, the server on a free loopback port (its Unix socket in that folder too),
deleted afterwards.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster belongs to the
``postgres`` user (created by Debian's postgresql package) and its commands run through
``runuser``. The server binaries are found in ``AI_NODE_POSTGRES_BINDIR``, on PATH, or in
Debian's ``/usr/lib/postgresql/<major>/bin``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

SUPERUSER = "postgres"


class PostgresUnavailable(Exception):
    """A cluster cannot be started here; the message says why (the test skips with it)."""


@dataclass(frozen=True)
class PostgresCluster:
    """A running throwaway cluster; trust authentication, superuser ``postgres``."""

    folder: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3) of ``database`` on this cluster."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        conninfo = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or ``None``."""
    configured = os.environ.get("AI_NODE_POSTGRES_BINDIR")
    if configured:  # only there: a wrong setting must not be hidden by another install
        candidates = [Path(configured)]
    else:
        on_path = shutil.which("initdb")
        candidates = [Path(on_path).resolve().parent] if on_path else []
        candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_major, reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


@contextmanager
def running_cluster() -> Iterator[PostgresCluster]:
    """Start a cluster for the duration of the ``with`` block.

    Raises :class:`PostgresUnavailable` when PostgreSQL is missing or cannot run here.
    """
    bindir = find_bindir()
    if bindir is None:
        configured = os.environ.get("AI_NODE_POSTGRES_BINDIR")
        where = f"in {configured}" if configured else "on PATH or in /usr/lib/postgresql"
        raise PostgresUnavailable(
            f"PostgreSQL server binaries (initdb, pg_ctl) were not found {where}; install "
            "Debian's postgresql package (make setup) or set AI_NODE_POSTGRES_BINDIR"
        )
    run_as = _run_as()
    folder = Path(tempfile.mkdtemp(prefix="ai-node-postgres-"))
    try:
        if run_as:
            account = pwd.getpwnam(SUPERUSER)
            os.chown(folder, account.pw_uid, account.pw_gid)
            if subprocess.run([*run_as, "test", "-w", str(folder)], check=False).returncode:
                raise PostgresUnavailable(
                    f"the {SUPERUSER!r} user cannot write to {folder}; point TMPDIR at a folder "
                    "every user can reach, such as /tmp"
                )
        data = folder / "data"
        locale = ["--encoding=UTF8", "--locale=C"]
        _run(run_as, [bindir / "initdb", "-D", data, "-U", SUPERUSER, "--auth=trust", "--no-sync", *locale])
        port = _start(run_as, bindir, folder)
        try:
            yield PostgresCluster(folder, port)
        finally:
            _run(run_as, [bindir / "pg_ctl", "stop", "-D", data, "-m", "immediate", "-w"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _major(folder: Path) -> int:
    """9 for /usr/lib/postgresql/9/bin, so that the newest installed version comes first."""
    match = re.fullmatch(r"\d+", folder.parent.name)
    return int(match.group()) if match else 0


def _run_as() -> list[str]:
    """The command prefix that runs PostgreSQL's tools as an unprivileged user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError as error:
        raise PostgresUnavailable(
            f"running as root, and PostgreSQL refuses to; there is no {SUPERUSER!r} user to run "
            "it as (Debian's postgresql package creates one)"
        ) from error
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailable("running as root, and runuser (util-linux) is not installed")
    return [runuser, "-u", SUPERUSER, "--"]


def _start(run_as: list[str], bindir: Path, folder: Path) -> int:
    """Start the server on a free port; a few tries, as another process may take the port."""
    log = folder / "server.log"
    for _ in range(3):
        port = _free_port()
        options = (
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        started = subprocess.run(
            [*run_as, *map(str, [bindir / "pg_ctl", "start", "-D", folder / "data", "-l", log])]
            + ["-w", "-t", "60", "-o", options],
            capture_output=True,
            text=True,
            check=False,
        )
        if started.returncode == 0:
            return port
    server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise PostgresUnavailable(f"pg_ctl start failed: {started.stdout}{started.stderr}\n{server_log}")


def _run(run_as: list[str], command: Sequence[str | Path]) -> None:
    completed = subprocess.run([*run_as, *map(str, command)], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise PostgresUnavailable(
            f"{Path(command[0]).name} failed ({completed.returncode}): {completed.stdout}{completed.stderr}"
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
