"""Leases: how the tables used as queues (jobs, deliveries) hand a row to one worker at a time.

A worker takes a row with one atomic ``UPDATE … WHERE … RETURNING``: the row becomes active
(``running``, ``sending``), leased to the worker until ``now + lease``, with one more attempt.
Taking the next row puts ``SELECT … LIMIT 1`` inside that statement: ``FOR UPDATE SKIP LOCKED``
on PostgreSQL, so concurrent workers pass over each other's candidates; on SQLite the caller's
transaction holds the database's write lock (``BEGIN IMMEDIATE``), so claims run one at a time.

The worker renews its lease with a heartbeat. If it dies, the lease expires and a later claim
takes the row again while attempts are left; a row out of attempts is reaped (failed) by its
store, which knows what to tell the user. Finishing a row checks that the worker still holds
it, so a worker whose lease was taken over cannot overwrite its successor's work.

:class:`LeasedTable` works on a connection whose transaction its store opened, so a claim and
the reaping before it commit together.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, FromClause, Row, Select, Table, and_, or_, select, update

from node.db.errors import LeaseLostError


@dataclass(frozen=True)
class LeasedTable:
    """The lease columns (status, lease_owner, lease_expires_at, attempts, max_attempts) of a
    table whose rows workers claim."""

    table: Table
    #: the status of a row a worker holds
    active_status: enum.Enum
    #: what a row is called in error messages: "job", "delivery"
    noun: str
    #: raised for a row id that does not exist
    not_found_error: type[Exception]

    def held(self, row_id: int, worker_id: str) -> tuple[ColumnElement[bool], ...]:
        """Conditions for "``worker_id`` holds row ``row_id``"."""
        columns = self.table.c
        return (
            columns.id == row_id,
            columns.status == self.active_status,
            columns.lease_owner == worker_id,
        )

    def claimable(
        self, candidate: FromClause, now: datetime, waiting: ColumnElement[bool]
    ) -> ColumnElement[bool]:
        """Condition on ``candidate`` (an alias of the table) for a row a claim may take: one
        ``waiting`` for its first or next attempt, or one whose worker died with attempts left."""
        columns = candidate.c
        return or_(
            waiting,
            and_(
                columns.status == self.active_status,
                columns.lease_expires_at < now,
                columns.attempts < columns.max_attempts,
            ),
        )

    def expired_without_attempts(self, now: datetime) -> tuple[ColumnElement[bool], ...]:
        """Conditions for the rows whose worker died on their last attempt: the ones to reap."""
        columns = self.table.c
        return (
            columns.status == self.active_status,
            columns.lease_expires_at < now,
            columns.attempts >= columns.max_attempts,
        )

    def take(
        self,
        connection: Connection,
        worker_id: str,
        now: datetime,
        lease: timedelta,
        *where: ColumnElement[bool],
        **values: Any,
    ) -> Row[Any] | None:
        """Make the row ``where`` selects active, leased to ``worker_id``, with one more attempt
        and ``values``; ``None`` when ``where`` selects no row."""
        return connection.execute(
            update(self.table)
            .where(*where)
            .values(
                **values,
                status=self.active_status,
                lease_owner=worker_id,
                lease_expires_at=now + lease,
                attempts=self.table.c.attempts + 1,
                updated_at=now,
            )
            .returning(*self.table.c)
        ).first()

    def take_next(
        self,
        connection: Connection,
        worker_id: str,
        now: datetime,
        lease: timedelta,
        candidates: Select[Any],
        **values: Any,
    ) -> Row[Any] | None:
        """:meth:`take` the first row of ``candidates`` (ids, ordered), ``None`` when there is none."""
        # SKIP LOCKED on PostgreSQL; on SQLite the caller's transaction holds the write lock
        first = candidates.limit(1).with_for_update(skip_locked=True).scalar_subquery()
        return self.take(connection, worker_id, now, lease, self.table.c.id == first, **values)

    def heartbeat(
        self, connection: Connection, row_id: int, worker_id: str, now: datetime, lease: timedelta
    ) -> bool:
        """Extend the lease of a row ``worker_id`` holds; ``False`` if it no longer holds it."""
        result = connection.execute(
            update(self.table)
            .where(*self.held(row_id, worker_id))
            .values(lease_expires_at=now + lease, updated_at=now)
        )
        return result.rowcount == 1

    def held_row(self, connection: Connection, row_id: int, worker_id: str) -> Row[Any]:
        """The row ``worker_id`` holds, locked until the transaction ends (on SQLite the write
        lock is); :class:`LeaseLostError` if it no longer holds it."""
        row = connection.execute(
            select(self.table).where(*self.held(row_id, worker_id)).with_for_update()
        ).first()
        if row is None:
            raise self._lease_lost(connection, row_id, worker_id)
        return row

    def finish(
        self, connection: Connection, row_id: int, worker_id: str, now: datetime, **values: Any
    ) -> Row[Any]:
        """End the lease of a row ``worker_id`` holds, setting ``values`` (its new status…).

        :class:`LeaseLostError` if the worker no longer holds the row.
        """
        row = connection.execute(
            update(self.table)
            .where(*self.held(row_id, worker_id))
            .values(**values, lease_expires_at=None, updated_at=now)
            .returning(*self.table.c)
        ).first()
        if row is None:
            raise self._lease_lost(connection, row_id, worker_id)
        return row

    def existing_row(self, connection: Connection, row_id: int, *, lock: bool = False) -> Row[Any]:
        """The row with id ``row_id``, :attr:`not_found_error` if there is none; with ``lock``,
        locked until the transaction ends (on SQLite the write lock is)."""
        query = select(self.table).where(self.table.c.id == row_id)
        row = connection.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise self.not_found_error(f"there is no {self.noun} {row_id}")
        return row

    def _lease_lost(self, connection: Connection, row_id: int, worker_id: str) -> LeaseLostError:
        current = self.existing_row(connection, row_id)
        if current.status == self.active_status:
            reason = f"worker {current.lease_owner!r} took it over after the lease expired"
        else:
            reason = f"it is {type(self.active_status)(current.status).value} now"
        return LeaseLostError(f"worker {worker_id!r} no longer holds {self.noun} {row_id}: {reason}")
