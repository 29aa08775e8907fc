"""A job's result objects in the job database until every destination has them.

The other store of :mod:`node.delivery.staging`, for hosts that share nothing but PostgreSQL: a
delivery retried by a worker on another host reads the objects from here. Each object is its
Part 10 bytes, zlib-compressed (a BINARY SEG is mostly zero bits: 200 MB shrink to a few), in
one row; a job's rows are written in one transaction, so a job is staged whole or not at all.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Engine, Table, delete, insert, select

from node.db.common import database_now
from node.db.database import WRITE
from node.db.models import StagedResultRow

STAGED = cast(Table, StagedResultRow.__table__)
#: fast: the objects are compressed once and read back once or twice
COMPRESSION_LEVEL = 1


class StagedResults:
    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(**WRITE)
        self._clock = clock

    def write(self, job_uid: str, objects: Sequence[tuple[str, bytes]]) -> None:
        """Keep ``(SOP Instance UID, Part 10 bytes)`` objects for the job, replacing what a job
        re-run after its worker died had kept."""
        rows = [
            {
                "job_uid": job_uid,
                "position": position,
                "sop_instance_uid": uid,
                "data": zlib.compress(data, COMPRESSION_LEVEL),
            }
            for position, (uid, data) in enumerate(objects, start=1)
        ]
        with self._write_engine.begin() as connection:
            now = database_now(connection, self._clock)
            connection.execute(delete(STAGED).where(STAGED.c.job_uid == job_uid))
            if rows:
                connection.execute(insert(STAGED), [{**row, "created_at": now} for row in rows])

    def read(self, job_uid: str) -> list[bytes]:
        """The job's objects, Part 10 bytes, in the order they were kept; [] if none are."""
        with self._engine.begin() as connection:
            rows = connection.execute(
                select(STAGED.c.data).where(STAGED.c.job_uid == job_uid).order_by(STAGED.c.position)
            ).all()
        return [zlib.decompress(row.data) for row in rows]

    def remove(self, job_uid: str) -> None:
        with self._write_engine.begin() as connection:
            connection.execute(delete(STAGED).where(STAGED.c.job_uid == job_uid))
