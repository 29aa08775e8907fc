"""Engines and schema migrations for the job database: a SQLite file or PostgreSQL.

The Orthanc plugin and every worker open the same database. On SQLite that means several
processes sharing one file, so each connection runs in WAL mode (readers never block the
writer) with a generous busy timeout, and SQLAlchemy, not the ``sqlite3`` module, emits BEGIN:
write transactions take the write lock up front (``BEGIN IMMEDIATE``), so they wait for each
other in the busy handler instead of failing half-way with "database is locked".
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url

from node.db.errors import DatabaseSchemaError
from node.errors import ConfigurationError
from node.support.private import PRIVATE_FILE, restrict

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: How long a SQLite connection waits for another process's write transaction to finish.
SQLITE_BUSY_TIMEOUT_MS = 30_000

#: ``UPDATE … RETURNING`` (the single-statement claim) needs SQLite 3.35.
SQLITE_MIN_VERSION = (3, 35, 0)

#: Execution option that makes a SQLite transaction start with ``BEGIN IMMEDIATE``; set on the
#: engines used for writes (``engine.execution_options(**WRITE)``). Ignored on PostgreSQL.
WRITE_OPTION = "ai_node_write"
WRITE: dict[str, Any] = {WRITE_OPTION: True}

#: Key of the PostgreSQL advisory lock held while migrating ("ai-node" in ASCII).
_PG_MIGRATION_LOCK_KEY = 0x61692D6E6F6465


def create_engine_for(url: str | URL) -> Engine:
    """Return an engine for the job database at ``url``.

    Statements' parameters never appear in errors or logs (``hide_parameters``): a destination's
    document or a job's error could carry what must not be shown.

    ``sqlite:///path/to/jobs.sqlite`` (the default, a file in the node's data folder) or
    ``postgresql+psycopg://user:password@host/db`` (``postgresql://`` is taken to mean
    psycopg 3). The engine is safe to share between threads.
    """
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, shown)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.get_driver_name() != "psycopg":
            raise ConfigurationError(
                f"job database URL {shown!r} uses driver {parsed.get_driver_name()!r}; "
                "the node supports postgresql+psycopg (psycopg 3)"
            )
        # pre-ping: a worker survives a PostgreSQL restart without failing its next job
        return create_engine(parsed, pool_pre_ping=True, hide_parameters=True)
    raise ConfigurationError(
        f"job database URL {shown!r} names backend {backend!r}; the node supports "
        "sqlite:///<file> and postgresql+psycopg://…"
    )


def _sqlite_engine(url: URL, shown: str) -> Engine:
    if url.get_driver_name() != "pysqlite":
        raise ConfigurationError(
            f"job database URL {shown!r} uses driver {url.get_driver_name()!r}; use sqlite:///<file>"
        )
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        raise ConfigurationError(
            f"job database URL {shown!r} is an in-memory SQLite database, which the Orthanc "
            "plugin and the workers cannot share; use a file, e.g. sqlite:///var/jobs.sqlite"
        )
    if sqlite3.sqlite_version_info < SQLITE_MIN_VERSION:
        raise ConfigurationError(
            f"SQLite {sqlite3.sqlite_version} is too old for the job database; "
            f"it needs {'.'.join(map(str, SQLITE_MIN_VERSION))} or newer (UPDATE … RETURNING)"
        )
    _private_database_files(Path(database))
    engine = create_engine(url, hide_parameters=True)
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _private_database_files(database: Path) -> None:
    """The database file mode 600 before SQLite first opens it: SQLite gives its -wal and -shm
    files the database file's mode, so all three stay the node's own whatever the umask.
    Files an older node left readable are narrowed."""
    if not database.parent.is_dir():
        return  # SQLite will say that the folder is missing
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        with contextlib.suppress(PermissionError):  # another account's file: not ours to change
            restrict(path)


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy emits BEGIN itself (see _begin_sqlite_transaction)
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first, so that switching to WAL waits for a concurrent opener
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _use_wal(cursor: Any) -> None:
    # Switching to WAL needs a moment of exclusive access, and SQLite answers "database is
    # locked" at once, without its busy handler, when another process holds the database just
    # then (several processes opening a new database together). Once switched, the mode is
    # stored in the file, so later openers only read it.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _begin_sqlite_transaction(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for the job database's migrations, built without an ini file.

    With ``connection``, the migrations run on that connection and inside its transaction.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def migrate(url_or_engine: str | URL | Engine) -> None:
    """Bring the job database's schema to this node's version (Alembic ``upgrade head``).

    Every process calls this at start; concurrent calls are safe. The whole upgrade is one
    transaction that first takes a lock — SQLite's write lock (``BEGIN IMMEDIATE``), or a
    PostgreSQL advisory lock — so a second process waits, then finds the schema current.
    """
    if isinstance(url_or_engine, Engine):
        engine, owned = url_or_engine, False
    else:
        engine, owned = create_engine_for(url_or_engine), True
    try:
        with engine.execution_options(**WRITE).begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY}
                )
            config = alembic_config(connection)
            _refuse_unknown_revisions(connection, config, engine)
            command.upgrade(config, "head")
    finally:
        if owned:
            engine.dispose()


def _refuse_unknown_revisions(connection: Connection, config: Config, engine: Engine) -> None:
    script = ScriptDirectory.from_config(config)
    known = {revision.revision for revision in script.walk_revisions()}
    current = MigrationContext.configure(connection).get_current_heads()
    unknown = sorted(set(current) - known)
    if unknown:
        shown = engine.url.render_as_string(hide_password=True)
        raise DatabaseSchemaError(
            f"the job database {shown} is at schema revision {', '.join(unknown)}, which this "
            f"version of the node does not know (it knows {', '.join(sorted(known))}); a newer "
            "node has probably migrated it: upgrade this node"
        )
