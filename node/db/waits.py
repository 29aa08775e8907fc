"""Studies waiting for the series a rule requires (a T1 and a FLAIR, say).

A rule with ``requires`` does not queue its jobs when the study is stable but lacks a required
series: the study waits here, with a deadline. Each time the study becomes stable again (more
series arrived) the rule is tried again; when the deadline passes, the rule's ``on_timeout``
decides (process what is there, or skip with the reason); an admin may force the study
complete at any time. One row per (study, rule).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Engine, Row, Table, func, select, update

from node.db.common import database_now, require_page, require_text, to_iso, upsert_statement
from node.db.database import WRITE
from node.db.models import StudyWaitRow, WaitStatus

WAITS = cast(Table, StudyWaitRow.__table__)


@dataclass(frozen=True)
class StudyWait:
    id: int
    orthanc_study_id: str
    study_instance_uid: str
    rule: str
    status: WaitStatus
    missing: tuple[str, ...]
    reason: str | None
    first_stable_at: datetime
    deadline: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row[Any]) -> StudyWait:
        # the columns are the fields; ``status`` reads back as a WaitStatus (its Enum type)
        values = row._mapping
        return cls(**{**values, "missing": tuple(values["missing"] or ())})

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "orthanc_study_id": self.orthanc_study_id,
            "study_instance_uid": self.study_instance_uid,
            "rule": self.rule,
            "status": self.status.value,
            "missing": list(self.missing),
            "reason": self.reason,
            "first_stable_at": to_iso(self.first_stable_at),
            "deadline": to_iso(self.deadline),
            "updated_at": to_iso(self.updated_at),
        }


class StudyWaitStore:
    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(**WRITE)
        self._clock = clock

    def wait(
        self,
        *,
        orthanc_study_id: str,
        study_instance_uid: str,
        rule: str,
        missing: Sequence[str],
        wait: timedelta,
    ) -> StudyWait:
        """Record that the study waits for ``missing`` series of ``rule``. The first call
        starts the wait (deadline ``wait`` from now); later calls only update what is missing.
        A wait that has ended (queued, skipped, forced) is left as it is and returned."""
        require_text("orthanc_study_id", orthanc_study_id, 64)
        require_text("rule", rule, 64)
        with self._write_engine.begin() as connection:
            now = database_now(connection, self._clock)
            connection.execute(
                upsert_statement(connection, WAITS)
                .values(
                    orthanc_study_id=orthanc_study_id,
                    study_instance_uid=study_instance_uid,
                    rule=rule,
                    status=WaitStatus.WAITING,
                    missing=list(missing),
                    reason=None,
                    first_stable_at=now,
                    deadline=now + wait,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=[WAITS.c.orthanc_study_id, WAITS.c.rule])
            )
            connection.execute(
                update(WAITS)
                .where(
                    WAITS.c.orthanc_study_id == orthanc_study_id,
                    WAITS.c.rule == rule,
                    WAITS.c.status == WaitStatus.WAITING,
                )
                .values(missing=list(missing), updated_at=now)
            )
            row = connection.execute(
                select(WAITS).where(WAITS.c.orthanc_study_id == orthanc_study_id, WAITS.c.rule == rule)
            ).one()
        return StudyWait.from_row(row)

    def end(
        self, orthanc_study_id: str, rule: str, status: WaitStatus, reason: str | None = None
    ) -> StudyWait | None:
        """End the study's wait for ``rule`` (if it waits); None when it was not waiting, so two
        callers (a stable event and the deadline check) never both act on one wait."""
        if status is WaitStatus.WAITING:
            raise ValueError("a wait ends as queued, skipped or forced")
        with self._write_engine.begin() as connection:
            now = database_now(connection, self._clock)
            row = connection.execute(
                update(WAITS)
                .where(
                    WAITS.c.orthanc_study_id == orthanc_study_id,
                    WAITS.c.rule == rule,
                    WAITS.c.status == WaitStatus.WAITING,
                )
                .values(status=status, reason=reason, updated_at=now)
                .returning(*WAITS.c)
            ).first()
        return None if row is None else StudyWait.from_row(row)

    def get(self, orthanc_study_id: str, rule: str) -> StudyWait | None:
        with self._engine.begin() as connection:
            row = connection.execute(
                select(WAITS).where(WAITS.c.orthanc_study_id == orthanc_study_id, WAITS.c.rule == rule)
            ).first()
        return None if row is None else StudyWait.from_row(row)

    def overdue(self) -> builtins.list[StudyWait]:
        """Waiting studies whose deadline has passed."""
        with self._engine.begin() as connection:
            now = database_now(connection, self._clock)
            rows = connection.execute(
                select(WAITS)
                .where(WAITS.c.status == WaitStatus.WAITING, WAITS.c.deadline <= now)
                .order_by(WAITS.c.deadline, WAITS.c.id)
            ).all()
        return [StudyWait.from_row(row) for row in rows]

    def list(
        self,
        status: WaitStatus | None = None,
        *,
        study: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[StudyWait]:
        """Waits, newest first; ``study`` keeps one Orthanc study id."""
        require_page(limit, offset)
        query = select(WAITS)
        if status is not None:
            query = query.where(WAITS.c.status == status)
        if study is not None:
            query = query.where(WAITS.c.orthanc_study_id == study)
        query = query.order_by(WAITS.c.first_stable_at.desc(), WAITS.c.id.desc()).limit(limit).offset(offset)
        with self._engine.begin() as connection:
            rows = connection.execute(query).all()
        return [StudyWait.from_row(row) for row in rows]

    def count_waiting(self) -> int:
        """How many (study, rule) waits are still waiting."""
        with self._engine.begin() as connection:
            return int(
                connection.execute(
                    select(func.count()).select_from(WAITS).where(WAITS.c.status == WaitStatus.WAITING)
                ).scalar_one()
            )
