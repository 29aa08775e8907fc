"""Exactly one change follower routes at a time across the Orthancs of a cluster.

Every Orthanc of a cluster runs the plug-in, and all of them read one change log (their shared
PostgreSQL index). Only the holder of a PostgreSQL advisory lock follows it; the others stand
by and try again every few seconds. The lock belongs to a database session, so when its holder
dies (the Orthanc killed, its host gone) PostgreSQL ends the session and frees the lock, and a
standby takes over from the cursor in the job database: the follower's own replay then routes
what the dead one had read but not yet handed on (node.intake.changes). PostgreSQL's advisory
locks are the existing engine for this; nothing is written to elect a leader.

With SQLite (one host by construction) the follower always leads.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

#: the advisory lock's key: any 64-bit number no other application uses on the database
ROUTING_LOCK_KEY = 0x41494E4F44450001  # "AINODE" 0001


class RoutingLeadership:
    def __init__(self, engine: Engine) -> None:
        self.shared = engine.dialect.name == "postgresql"
        # A connection of its own, not pooled: closing it must end the session (and so free the
        # lock); a pooled connection would go back to the pool still holding it.
        self._engine = create_engine(engine.url, poolclass=NullPool) if self.shared else engine
        self._connection: Connection | None = None

    @property
    def leading(self) -> bool:
        return not self.shared or self._connection is not None

    def lead(self) -> bool:
        """Whether this process may follow the change log now: it holds the lock (taking it if
        it is free), or the database is this host's alone."""
        if not self.shared:
            return True
        if self._connection is not None:
            if self._alive(self._connection):
                return True
            log.warning("lost the routing lock with its database session; standing by")
            self._drop()
        connection = self._engine.connect()
        try:
            taken = bool(
                connection.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": ROUTING_LOCK_KEY}
                ).scalar()
            )
            connection.commit()
        except DBAPIError:
            connection.close()
            raise
        if not taken:
            connection.close()
            return False
        self._connection = connection
        log.info("this Orthanc routes the cluster's studies now (it holds the routing lock)")
        return True

    def release(self) -> None:
        self._drop()

    def _alive(self, connection: Connection) -> bool:
        try:
            connection.execute(text("SELECT 1"))
            connection.commit()
        except DBAPIError:
            return False
        return True

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()  # ends the session: PostgreSQL frees the lock
            except DBAPIError:
                pass
            self._connection = None
