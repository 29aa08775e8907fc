"""Studies the change follower could not route, set aside so that the studies after them are.

The follower's cursor moves past a study once its routing either succeeded or is recorded
here: one study that cannot be summarised (deleted from Orthanc meanwhile, a Study Instance
UID the job table refuses) never holds up the rest. A transient failure is tried again after
a backoff; a lasting one, or one out of attempts, waits for an admin's Retry. One row per
Orthanc study; routing the study removes it.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Engine, Row, Table, delete, func, select, update

from node.db.common import database_now, require_page, require_text, to_iso, upsert_statement
from node.db.database import WRITE
from node.db.models import IntakeProblemRow, IntakeProblemStatus
from node.support.retry import next_attempt_delay

PROBLEMS = cast(Table, IntakeProblemRow.__table__)


class RetrySchedule(Protocol):
    """The retry settings (:class:`node.config.IntakeSettings`)."""

    @property
    def max_attempts(self) -> int: ...

    @property
    def base_delay(self) -> Any: ...

    @property
    def factor(self) -> float: ...

    @property
    def max_delay(self) -> Any: ...


@dataclass(frozen=True)
class IntakeProblem:
    id: int
    orthanc_study_id: str
    study_instance_uid: str | None
    trigger: str
    status: IntakeProblemStatus
    reason: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    next_attempt_at: datetime | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> IntakeProblem:
        return cls(**row._mapping)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "orthanc_study_id": self.orthanc_study_id,
            "study_instance_uid": self.study_instance_uid,
            "trigger": self.trigger,
            "status": self.status.value,
            "reason": self.reason,
            "attempts": self.attempts,
            "first_failed_at": to_iso(self.first_failed_at),
            "last_failed_at": to_iso(self.last_failed_at),
            "next_attempt_at": to_iso(self.next_attempt_at),
        }


class IntakeProblemStore:
    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(**WRITE)
        self._clock = clock

    def record(
        self,
        *,
        orthanc_study_id: str,
        study_instance_uid: str | None,
        trigger: str,
        reason: str,
        lasting: bool,
        schedule: RetrySchedule,
    ) -> IntakeProblem:
        """Record one more failed attempt to route the study: retrying after the schedule's
        next delay if the failure is transient and attempts are left, failed otherwise."""
        require_text("orthanc_study_id", orthanc_study_id, 64)
        with self._write_engine.begin() as connection:
            now = database_now(connection, self._clock)
            previous = connection.execute(
                select(PROBLEMS.c.attempts).where(PROBLEMS.c.orthanc_study_id == orthanc_study_id)
            ).scalar_one_or_none()
            attempts = (previous or 0) + 1
            retrying = not lasting and attempts < schedule.max_attempts
            next_attempt = (
                now
                + next_attempt_delay(
                    attempts, base=schedule.base_delay, factor=schedule.factor, cap=schedule.max_delay
                )
                if retrying
                else None
            )
            values = {
                "study_instance_uid": study_instance_uid,
                "trigger": trigger,
                "status": IntakeProblemStatus.RETRYING if retrying else IntakeProblemStatus.FAILED,
                "reason": reason,
                "attempts": attempts,
                "last_failed_at": now,
                "next_attempt_at": next_attempt,
            }
            connection.execute(
                upsert_statement(connection, PROBLEMS)
                .values(orthanc_study_id=orthanc_study_id, first_failed_at=now, **values)
                .on_conflict_do_update(index_elements=[PROBLEMS.c.orthanc_study_id], set_=values)
            )
            row = connection.execute(
                select(PROBLEMS).where(PROBLEMS.c.orthanc_study_id == orthanc_study_id)
            ).one()
        return IntakeProblem.from_row(row)

    def resolve(self, orthanc_study_id: str) -> IntakeProblem | None:
        """The study was routed: forget its problem (returned, if it had one)."""
        with self._write_engine.begin() as connection:
            row = connection.execute(
                delete(PROBLEMS).where(PROBLEMS.c.orthanc_study_id == orthanc_study_id).returning(*PROBLEMS.c)
            ).first()
        return None if row is None else IntakeProblem.from_row(row)

    def due(self) -> builtins.list[IntakeProblem]:
        """Retrying studies whose next attempt is due, oldest first."""
        with self._engine.begin() as connection:
            now = database_now(connection, self._clock)
            rows = connection.execute(
                select(PROBLEMS)
                .where(PROBLEMS.c.status == IntakeProblemStatus.RETRYING, PROBLEMS.c.next_attempt_at <= now)
                .order_by(PROBLEMS.c.next_attempt_at, PROBLEMS.c.id)
            ).all()
        return [IntakeProblem.from_row(row) for row in rows]

    def retry(self, problem_id: int) -> IntakeProblem | None:
        """An admin's Retry: the study is due now, with a fresh count of attempts."""
        with self._write_engine.begin() as connection:
            now = database_now(connection, self._clock)
            row = connection.execute(
                update(PROBLEMS)
                .where(PROBLEMS.c.id == problem_id)
                .values(status=IntakeProblemStatus.RETRYING, attempts=0, next_attempt_at=now)
                .returning(*PROBLEMS.c)
            ).first()
        return None if row is None else IntakeProblem.from_row(row)

    def get(self, problem_id: int) -> IntakeProblem | None:
        with self._engine.begin() as connection:
            row = connection.execute(select(PROBLEMS).where(PROBLEMS.c.id == problem_id)).first()
        return None if row is None else IntakeProblem.from_row(row)

    def list(
        self, status: IntakeProblemStatus | None = None, *, limit: int = 100, offset: int = 0
    ) -> builtins.list[IntakeProblem]:
        """Problems, the most recent failure first."""
        require_page(limit, offset)
        query = select(PROBLEMS)
        if status is not None:
            query = query.where(PROBLEMS.c.status == status)
        query = (
            query.order_by(PROBLEMS.c.last_failed_at.desc(), PROBLEMS.c.id.desc()).limit(limit).offset(offset)
        )
        with self._engine.begin() as connection:
            rows = connection.execute(query).all()
        return [IntakeProblem.from_row(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """How many studies are retrying and how many failed."""
        with self._engine.begin() as connection:
            rows = connection.execute(
                select(PROBLEMS.c.status, func.count()).group_by(PROBLEMS.c.status)
            ).all()
        found = {IntakeProblemStatus(status).value: int(count) for status, count in rows}
        return {status.value: found.get(status.value, 0) for status in IntakeProblemStatus}
