"""Alembic environment of the job database.

:func:`node.db.database.migrate` passes an open connection (inside its locked transaction)
as ``config.attributes["connection"]``; the migrations run on it and inside that transaction.
Without one, ``sqlalchemy.url`` is used (online), or SQL is printed (``--sql``, offline).
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext

from node.db.database import create_engine_for
from node.db.models import Base, UTCDateTime
from node.errors import ConfigurationError

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render the node's own column types as plain SQLAlchemy, so that migrations never import
    the models (a migration must keep meaning what it meant when it was written)."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_item=render_item,
        # SQLite cannot ALTER most things; batch mode also works on PostgreSQL
        render_as_batch=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise ConfigurationError(
            "the job database migrations need sqlalchemy.url or a connection in config.attributes"
        )
    engine = create_engine_for(url)
    try:
        with engine.connect() as own_connection:
            _configure(connection=own_connection, transactional_ddl=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
