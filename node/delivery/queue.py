"""Deliveries: sending one job's results to one destination is its own step, retried on its own.

A job that produced results gets one delivery per destination (:meth:`DeliveryStore.create_for_job`).
Workers claim, heartbeat and finish deliveries with the lease machinery they use for jobs
(:mod:`node.db.lease`): one atomic ``UPDATE … WHERE id = (SELECT … LIMIT 1) RETURNING``
statement, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, under the write lock (``BEGIN IMMEDIATE``)
on SQLite. The claim takes the delivery that has been due the longest, whatever its
destination, so a destination that is down (its deliveries waiting out their backoff) never
holds up the others, and never loses a result: a delivery out of attempts stays ``failed``
until someone retries it.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Engine, Row, Table, and_, func, select, update

from node.db.common import (
    database_now,
    lease_duration,
    parse_enum,
    require_int,
    require_page,
    require_text,
    to_iso,
    upsert_statement,
)
from node.db.database import WRITE
from node.db.errors import DeliveryNotFoundError, DeliveryStateError, JobNotFoundError
from node.db.lease import LeasedTable
from node.db.models import DeliveryRow, DeliveryStatus, JobRow

DELIVERIES = cast(Table, DeliveryRow.__table__)
JOBS = cast(Table, JobRow.__table__)
LEASED_DELIVERIES = LeasedTable(DELIVERIES, DeliveryStatus.SENDING, "delivery", DeliveryNotFoundError)

DEFAULT_MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Delivery:
    """A snapshot of one row of the delivery table."""

    id: int
    job_id: int
    #: the destination's name
    destination: str
    status: DeliveryStatus
    #: claims so far (a claim after a worker died counts again)
    attempts: int
    max_attempts: int
    #: when a pending delivery is due
    next_attempt_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    #: why the last attempt failed
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row[Any]) -> Delivery:
        # the columns are the fields; ``status`` reads back as a DeliveryStatus (its Enum type)
        return cls(**row._mapping)

    def to_json(self) -> dict[str, Any]:
        """The delivery as the REST API shows it: plain JSON types, ISO 8601 UTC timestamps."""
        return {
            "id": self.id,
            "job_id": self.job_id,
            "destination": self.destination,
            "status": self.status.value,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "next_attempt_at": to_iso(self.next_attempt_at),
            "lease_owner": self.lease_owner,
            "lease_expires_at": to_iso(self.lease_expires_at),
            "last_error": self.last_error,
            "delivered_at": to_iso(self.delivered_at),
            "created_at": to_iso(self.created_at),
            "updated_at": to_iso(self.updated_at),
        }


class DeliveryStore:
    """The delivery table over one SQLAlchemy engine; every method is one short transaction.

    The schema must be current (:func:`node.db.migrate`). ``clock`` replaces the time source
    (tests); it must return aware datetimes.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(**WRITE)
        self._clock = clock

    # -- recording deliveries ---------------------------------------------------------------

    def create_for_job(
        self, job_id: int, destinations: Sequence[str], max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> builtins.list[Delivery]:
        """Make sure job ``job_id`` has a delivery to each of ``destinations``; return all its
        deliveries. Idempotent: an existing delivery is left as it is, whatever its status.

        Raises :class:`JobNotFoundError` when there is no such job.
        """
        if isinstance(destinations, str):
            raise TypeError(f"destinations must be a list of names, not the string {destinations!r}")
        for name in destinations:
            require_text("destination", name, 64)
        require_int("max_attempts", max_attempts, 1)
        with self._write() as connection:
            now = database_now(connection, self._clock)
            if connection.execute(select(JOBS.c.id).where(JOBS.c.id == job_id)).first() is None:
                raise JobNotFoundError(f"there is no job {job_id}")
            values = [
                {
                    "job_id": job_id,
                    "destination": name,
                    "status": DeliveryStatus.PENDING,
                    "attempts": 0,
                    "max_attempts": max_attempts,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for name in dict.fromkeys(destinations)
            ]
            if values:
                connection.execute(
                    upsert_statement(connection, DELIVERIES)
                    .values(values)
                    .on_conflict_do_nothing(index_elements=[DELIVERIES.c.job_id, DELIVERIES.c.destination])
                )
            rows = connection.execute(
                select(DELIVERIES).where(DELIVERIES.c.job_id == job_id).order_by(DELIVERIES.c.id)
            ).all()
        return [Delivery.from_row(row) for row in rows]

    # -- working on deliveries --------------------------------------------------------------

    def claim_due(self, worker_id: str, lease_seconds: float) -> Delivery | None:
        """Take the delivery that has been due the longest, or ``None`` when none is due.

        Due are the pending deliveries whose ``next_attempt_at`` has come, and the sending ones
        whose lease expired (their worker died) with attempts left; expired ones without
        attempts left fail first. The delivery becomes ``sending`` with a lease of
        ``lease_seconds`` and one more attempt.
        """
        require_text("worker_id", worker_id, 200)
        lease = lease_duration(lease_seconds)
        with self._write() as connection:
            now = database_now(connection, self._clock)
            self._reap(connection, now)
            candidate = DELIVERIES.alias("candidate")
            due = and_(candidate.c.status == DeliveryStatus.PENDING, candidate.c.next_attempt_at <= now)
            query = (
                select(candidate.c.id)
                .where(LEASED_DELIVERIES.claimable(candidate, now, waiting=due))
                .order_by(candidate.c.next_attempt_at, candidate.c.id)
            )
            return _delivery(LEASED_DELIVERIES.take_next(connection, worker_id, now, lease, query))

    def claim(self, delivery_id: int, worker_id: str, lease_seconds: float) -> Delivery | None:
        """Take one pending delivery now, due or not (the worker that built a job's results
        sends them at once); ``None`` if it is not pending (another worker has it, or it is
        delivered or failed)."""
        require_text("worker_id", worker_id, 200)
        lease = lease_duration(lease_seconds)
        with self._write() as connection:
            now = database_now(connection, self._clock)
            row = LEASED_DELIVERIES.take(
                connection,
                worker_id,
                now,
                lease,
                DELIVERIES.c.id == delivery_id,
                DELIVERIES.c.status == DeliveryStatus.PENDING,
            )
        return _delivery(row)

    def heartbeat(self, delivery_id: int, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease of a delivery ``worker_id`` holds; ``False`` if it no longer does."""
        lease = lease_duration(lease_seconds)
        with self._write() as connection:
            now = database_now(connection, self._clock)
            return LEASED_DELIVERIES.heartbeat(connection, delivery_id, worker_id, now, lease)

    def delivered(self, delivery_id: int, worker_id: str) -> Delivery:
        """Mark a delivery ``worker_id`` holds as delivered.

        Raises :class:`LeaseLostError` if the worker no longer holds it.
        """
        with self._write() as connection:
            now = database_now(connection, self._clock)
            row = LEASED_DELIVERIES.finish(
                connection,
                delivery_id,
                worker_id,
                now,
                status=DeliveryStatus.DELIVERED,
                last_error=None,
                delivered_at=now,
            )
        return Delivery.from_row(row)

    def failed_attempt(
        self,
        delivery_id: int,
        worker_id: str,
        error: str,
        *,
        backoff: Callable[[int], timedelta],
    ) -> Delivery:
        """Record that an attempt of a delivery ``worker_id`` holds failed with ``error``.

        With attempts left, the delivery is pending again, due ``backoff(attempts)`` from now
        (e.g. :func:`node.support.retry.next_attempt_delay`); without, it is ``failed``
        until someone retries it.
        Raises :class:`LeaseLostError` if the worker no longer holds it.
        """
        require_text("error", error)
        with self._write() as connection:
            now = database_now(connection, self._clock)
            current = LEASED_DELIVERIES.held_row(connection, delivery_id, worker_id)
            values: dict[str, Any]
            if current.attempts >= current.max_attempts:
                values = {"status": DeliveryStatus.FAILED}
            else:
                delay = backoff(current.attempts)
                if not isinstance(delay, timedelta) or delay < timedelta(0):
                    raise ValueError(
                        f"backoff({current.attempts}) returned {delay!r}; it must be a timedelta of 0 or more"
                    )
                values = {"status": DeliveryStatus.PENDING, "next_attempt_at": now + delay}
            row = LEASED_DELIVERIES.finish(
                connection, delivery_id, worker_id, now, **values, last_error=error
            )
        return Delivery.from_row(row)

    def retry(self, delivery_id: int) -> Delivery:
        """Put a failed delivery back in the queue, due now, with its attempts starting again
        from 0. :class:`DeliveryStateError` unless it is failed."""
        with self._write() as connection:
            now = database_now(connection, self._clock)
            row = connection.execute(
                update(DELIVERIES)
                .where(DELIVERIES.c.id == delivery_id, DELIVERIES.c.status == DeliveryStatus.FAILED)
                .values(
                    status=DeliveryStatus.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    last_error=None,
                    updated_at=now,
                )
                .returning(*DELIVERIES.c)
            ).first()
            if row is None:
                status = DeliveryStatus(LEASED_DELIVERIES.existing_row(connection, delivery_id).status)
                raise DeliveryStateError(
                    f"delivery {delivery_id} is {status.value}, not failed, so there is nothing to retry"
                )
        return Delivery.from_row(row)

    # -- reading ----------------------------------------------------------------------------

    def get(self, delivery_id: int) -> Delivery:
        """The delivery with id ``delivery_id``; :class:`DeliveryNotFoundError` if there is none."""
        with self._engine.begin() as connection:
            return Delivery.from_row(LEASED_DELIVERIES.existing_row(connection, delivery_id))

    def for_job(self, job_id: int) -> builtins.list[Delivery]:
        """The deliveries of one job, in the order they were created."""
        with self._engine.begin() as connection:
            rows = connection.execute(
                select(DELIVERIES).where(DELIVERIES.c.job_id == job_id).order_by(DELIVERIES.c.id)
            ).all()
        return [Delivery.from_row(row) for row in rows]

    def counts_by_status(self) -> dict[DeliveryStatus, int]:
        """How many deliveries are in each status (every status present, zeros included)."""
        with self._engine.begin() as connection:
            rows = connection.execute(
                select(DELIVERIES.c.status, func.count()).group_by(DELIVERIES.c.status)
            ).all()
        counts = dict.fromkeys(DeliveryStatus, 0)
        for status, count in rows:
            counts[DeliveryStatus(status)] = count
        return counts

    def list(
        self,
        status: DeliveryStatus | str | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[Delivery]:
        """Deliveries, newest first; ``status`` keeps one status. ``limit`` is 1 to 1000."""
        require_page(limit, offset)
        query = select(DELIVERIES)
        if status is not None:
            query = query.where(DELIVERIES.c.status == parse_enum(DeliveryStatus, status, "delivery status"))
        query = query.order_by(DELIVERIES.c.created_at.desc(), DELIVERIES.c.id.desc())
        with self._engine.begin() as connection:
            rows = connection.execute(query.limit(limit).offset(offset)).all()
        return [Delivery.from_row(row) for row in rows]

    # -- internals --------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        # on SQLite: BEGIN IMMEDIATE, so the transaction holds the write lock from its start
        with self._write_engine.begin() as connection:
            yield connection

    def _reap(self, connection: Connection, now: datetime) -> None:
        """Fail the sending deliveries whose lease expired with no attempts left."""
        connection.execute(
            update(DELIVERIES)
            .where(*LEASED_DELIVERIES.expired_without_attempts(now))
            .values(
                status=DeliveryStatus.FAILED,
                last_error=(
                    "The worker sending this delivery stopped before finishing it on its last "
                    "attempt (its lease expired), so the node gave up; look for crashes in the "
                    "worker logs, then retry the delivery."
                ),
                lease_expires_at=None,
                updated_at=now,
            )
        )


def _delivery(row: Row[Any] | None) -> Delivery | None:
    return None if row is None else Delivery.from_row(row)
