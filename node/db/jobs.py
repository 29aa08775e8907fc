"""The job queue: the Orthanc plugin records jobs, worker processes claim and finish them.

Every method is one short transaction, so a :class:`JobStore` can be shared by Orthanc's
OnChange thread and its HTTP threads. The database is the queue (no lock files):

* a claim is one atomic statement — ``UPDATE … WHERE id = (SELECT … LIMIT 1) RETURNING``; on
  PostgreSQL the inner SELECT is ``FOR UPDATE SKIP LOCKED``, on SQLite the statement runs
  under the database's write lock (``BEGIN IMMEDIATE``) — so two workers never get one job;
* a claimed job carries a lease that its worker renews with :meth:`JobStore.heartbeat`; when a
  worker dies, its lease expires and the next claim takes the job again (one more attempt),
  until ``max_attempts`` is used up and the job fails with a reason (:mod:`node.db.lease`
  holds this machinery, shared with the deliveries);
* a unique constraint on (StudyInstanceUID, pipeline name, pipeline version, generation) makes
  :meth:`JobStore.enqueue` idempotent however many events and replays report the study.

Timestamps come from the database server's clock on PostgreSQL (workers on several hosts need
not agree on the time) and from this host's clock on SQLite (one host by construction).
"""

from __future__ import annotations

import builtins
import copy
import enum
import logging
import math
import numbers
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Table,
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import URL

from node import THIS_ORTHANC
from node.db.common import (
    database_now,
    json_object,
    lease_duration,
    parse_enum,
    require_int,
    require_page,
    require_text,
    to_iso,
    upsert_statement,
)
from node.db.database import WRITE, create_engine_for
from node.db.errors import JobNotFoundError, JobStateError, QueueFullError
from node.db.lease import LeasedTable
from node.db.models import JobRow, JobStatus, NodeStateRow

logger = logging.getLogger(__name__)

JOBS = cast(Table, JobRow.__table__)
STATE = cast(Table, NodeStateRow.__table__)
LEASED_JOBS = LeasedTable(JOBS, JobStatus.RUNNING, "job", JobNotFoundError)

DEFAULT_MAX_ATTEMPTS = 3
#: PS3.5 §9.1: a UID has at most 64 characters
MAX_UID_LENGTH = 64
#: tries of a re-run that keeps losing the race for its generation number to another re-run
_RERUN_TRIES = 5


#: node_state keys "worker:<id>" hold each worker's report: the pipelines it has loaded and
#: the ones it claims (node.worker writes them, GET /ai/pipelines reads them)
WORKER_STATE_PREFIX = "worker:"


class JobTrigger(enum.StrEnum):
    """What asked for a job."""

    #: Orthanc reported the study stable (OnChange STABLE_STUDY)
    STABLE_STUDY = "stable-study"
    #: Orthanc reported a series stable (OnChange STABLE_SERIES)
    STABLE_SERIES = "stable-series"
    #: found while replaying Orthanc's /changes log after the node was down
    REPLAY = "replay"
    #: a user asked for it (REST, admin UI, CLI), including re-runs
    MANUAL = "manual"
    #: a rule's wait for required series ended and the rule says process anyway
    WAIT_TIMEOUT = "wait-timeout"
    #: an admin forced the study complete
    FORCED = "forced"


@dataclass(frozen=True)
class Job:
    """A snapshot of one row of the job table.

    ``stage_timings`` and ``result`` are read-only mappings; the lists inside ``result`` are
    the snapshot's own copies, never shared with the database layer.
    """

    id: int
    #: random UUID, unique; the job's result UIDs are derived from it, so a retried job
    #: (same uid) rewrites its objects while a re-run (new uid) makes new ones
    uid: str
    orthanc_study_id: str
    study_instance_uid: str
    pipeline_name: str
    pipeline_version: str
    #: 0 for the automatic job of a study and pipeline version; 1, 2, … for re-runs
    generation: int
    status: JobStatus
    trigger: JobTrigger
    #: higher runs first
    priority: int
    #: claims so far (a claim after a worker died counts again)
    attempts: int
    max_attempts: int
    #: the worker holding the job while running; the last one to hold it afterwards
    lease_owner: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: why the job failed, as a sentence a PACS administrator can act on
    error: str | None
    #: seconds per stage, e.g. {"fetch": 0.5, "inference": 12.1}
    stage_timings: Mapping[str, float]
    result: Mapping[str, Any] | None
    #: the job this one re-runs
    rerun_of: int | None
    #: where the results go (destination names); this Orthanc for jobs queued before rules
    destinations: tuple[str, ...] = (THIS_ORTHANC,)
    #: the routing rules that queued the job (empty: queued by hand or before rules)
    rules: tuple[str, ...] = ()
    #: the input series routing chose; None lets the pipeline choose when the job runs
    series_instance_uid: str | None = None

    @classmethod
    def from_row(cls, row: Row[Any]) -> Job:
        # the columns are the fields; ``status`` reads back as a JobStatus (its Enum type)
        values = row._mapping
        return cls(
            **{
                **values,
                "trigger": JobTrigger(values["trigger"]),
                "stage_timings": MappingProxyType(dict(values["stage_timings"] or {})),
                "result": None if values["result"] is None else MappingProxyType(values["result"]),
                "destinations": tuple(values["destinations"] or (THIS_ORTHANC,)),
                "rules": tuple(values["rules"] or ()),
            }
        )

    def to_json(self) -> dict[str, Any]:
        """The job as the REST API shows it: plain JSON types, ISO 8601 UTC timestamps."""
        return {
            "id": self.id,
            "uid": self.uid,
            "orthanc_study_id": self.orthanc_study_id,
            "study_instance_uid": self.study_instance_uid,
            "pipeline_name": self.pipeline_name,
            "pipeline_version": self.pipeline_version,
            "generation": self.generation,
            "status": self.status.value,
            "trigger": self.trigger.value,
            "priority": self.priority,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "lease_owner": self.lease_owner,
            "lease_expires_at": to_iso(self.lease_expires_at),
            "created_at": to_iso(self.created_at),
            "updated_at": to_iso(self.updated_at),
            "started_at": to_iso(self.started_at),
            "finished_at": to_iso(self.finished_at),
            "error": self.error,
            "stage_timings": dict(self.stage_timings),
            "result": None if self.result is None else copy.deepcopy(dict(self.result)),
            "rerun_of": self.rerun_of,
            "destinations": list(self.destinations),
            "rules": list(self.rules),
            "series_instance_uid": self.series_instance_uid,
        }


@dataclass(frozen=True)
class QueueRoom:
    """How many jobs are queued against the cap (``worker.max_queued_jobs``; None: no cap)."""

    queued: int
    cap: int | None

    @property
    def full(self) -> bool:
        return self.cap is not None and self.queued >= self.cap

    def require(self) -> None:
        """:class:`QueueFullError` when the queue is full."""
        if self.full:
            raise QueueFullError(
                f"the job queue is full ({self.queued} queued, worker.max_queued_jobs is "
                f"{self.cap}): new studies wait in Orthanc until workers make room"
            )

    def to_json(self) -> dict[str, Any]:
        return {"queued": self.queued, "max_queued_jobs": self.cap, "full": self.full}


class JobStore:
    """The job table and the node's key/value state, over one SQLAlchemy engine.

    The schema must be current: call :func:`node.db.migrate` once at process start.
    ``clock`` replaces the time source (tests); it must return aware datetimes.
    ``max_queued_jobs`` is the cap that :meth:`queue_room` reports against; the store itself
    queues regardless (a user's Run now or Retry is never refused), and intake asks first.
    """

    def __init__(
        self,
        database: Engine | str | URL,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        clock: Callable[[], datetime] | None = None,
        max_queued_jobs: int | None = None,
    ) -> None:
        require_int("max_attempts", max_attempts, 1)
        if max_queued_jobs is not None:
            require_int("max_queued_jobs", max_queued_jobs, 1)
        self.max_queued_jobs = max_queued_jobs
        if isinstance(database, Engine):
            self._engine, self._owns_engine = database, False
        else:
            self._engine, self._owns_engine = create_engine_for(database), True
        self._write_engine = self._engine.execution_options(**WRITE)
        self._max_attempts = max_attempts
        self._clock = clock

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Close the pooled connections if this store created its engine from a URL."""
        if self._owns_engine:
            self._engine.dispose()

    # -- recording jobs ---------------------------------------------------------------------

    def enqueue(
        self,
        *,
        orthanc_study_id: str,
        study_instance_uid: str,
        pipeline_name: str,
        pipeline_version: str,
        trigger: JobTrigger,
        priority: int = 0,
        destinations: Sequence[str] | None = None,
        rules: Sequence[str] | None = None,
        series_instance_uid: str | None = None,
    ) -> Job | None:
        """Queue the automatic job of a study for one pipeline version.

        Returns ``None`` when that job exists already, whatever its status (queued, running,
        done or failed): events and ``/changes`` replays may report a study any number of
        times, concurrently too. A failed job runs again only through :meth:`retry`.
        """
        values = _new_job_values(
            orthanc_study_id=orthanc_study_id,
            study_instance_uid=study_instance_uid,
            pipeline_name=pipeline_name,
            pipeline_version=pipeline_version,
            trigger=trigger,
            priority=priority,
        )
        values |= {
            "destinations": None if destinations is None else list(dict.fromkeys(destinations)),
            "rules": None if rules is None else list(rules),
            "series_instance_uid": series_instance_uid,
        }
        with self._write() as connection:
            values |= self._stamps(self._now(connection), generation=0, rerun_of=None)
            row = self._insert_job(connection, values)
        return None if row is None else Job.from_row(row)

    def rerun(self, job_id: int) -> Job:
        """Queue a new run of a finished (done or failed) job, at the user's request.

        The new job has the next generation of its study and pipeline version, a new uid (so
        new result objects), ``rerun_of=job_id`` and trigger ``manual``. Raises
        :class:`JobStateError` while the job, or another run of the same study and pipeline
        version, is still queued or running.
        """
        for _ in range(_RERUN_TRIES):
            with self._write() as connection:
                now = self._now(connection)
                source = LEASED_JOBS.existing_row(connection, job_id, lock=True)
                if source.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                    raise JobStateError(
                        f"job {job_id} is still {JobStatus(source.status).value}; it can be "
                        "re-run once it is done or failed"
                    )
                same = and_(
                    JOBS.c.study_instance_uid == source.study_instance_uid,
                    JOBS.c.pipeline_name == source.pipeline_name,
                    JOBS.c.pipeline_version == source.pipeline_version,
                )
                active = connection.execute(
                    select(JOBS.c.id, JOBS.c.status)
                    .where(same, JOBS.c.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
                    .limit(1)
                ).first()
                if active is not None:
                    raise JobStateError(
                        f"job {active.id} runs the same study with pipeline "
                        f"{source.pipeline_name} {source.pipeline_version} and is still "
                        f"{JobStatus(active.status).value}; re-run once it has finished"
                    )
                latest = connection.execute(select(func.max(JOBS.c.generation)).where(same))
                values = _new_job_values(
                    orthanc_study_id=source.orthanc_study_id,
                    study_instance_uid=source.study_instance_uid,
                    pipeline_name=source.pipeline_name,
                    pipeline_version=source.pipeline_version,
                    trigger=JobTrigger.MANUAL,
                    priority=source.priority,
                )
                values |= {
                    "destinations": source.destinations,
                    "rules": source.rules,
                    "series_instance_uid": source.series_instance_uid,
                }
                values |= self._stamps(now, generation=(latest.scalar_one() or 0) + 1, rerun_of=source.id)
                row = self._insert_job(connection, values)
            if row is not None:
                return Job.from_row(row)
            # another re-run took that generation between our read and our insert: read again
        raise JobStateError(
            f"job {job_id} could not be re-run: {_RERUN_TRIES} concurrent re-runs of the same "
            "study and pipeline version took each generation number first; try again"
        )

    def retry(self, job_id: int) -> Job:
        """Put a failed job back in the queue, as the same job.

        The job keeps its id, uid (so its result UIDs: objects a failed attempt may have
        delivered are replaced, not duplicated), generation and priority; ``attempts`` starts
        again from 0, and the previous error, result, timings and lease are cleared. Only a
        failed job can be retried: :class:`JobStateError` for queued or running jobs, and for
        done jobs, which run again only as a :meth:`rerun` (a new job with new results).
        """
        with self._write() as connection:
            now = self._now(connection)
            row = connection.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.status == JobStatus.FAILED)
                .values(
                    status=JobStatus.QUEUED,
                    attempts=0,
                    lease_owner=None,
                    lease_expires_at=None,
                    started_at=None,
                    finished_at=None,
                    error=None,
                    result=None,
                    stage_timings=None,
                    updated_at=now,
                )
                .returning(*JOBS.c)
            ).first()
            if row is None:
                status = JobStatus(LEASED_JOBS.existing_row(connection, job_id).status)
                if status is JobStatus.DONE:
                    raise JobStateError(
                        f"job {job_id} is done, so there is nothing to retry; ask for a re-run "
                        "to run it again with new results"
                    )
                raise JobStateError(
                    f"job {job_id} is {status.value}, not failed, so there is nothing to retry"
                )
        return Job.from_row(row)

    def find_automatic(
        self, study_instance_uid: str, pipeline_name: str, pipeline_version: str
    ) -> Job | None:
        """The automatic job (generation 0) of a study for one pipeline version, if any."""
        with self._read() as connection:
            row = connection.execute(
                select(JOBS).where(
                    JOBS.c.study_instance_uid == study_instance_uid,
                    JOBS.c.pipeline_name == pipeline_name,
                    JOBS.c.pipeline_version == pipeline_version,
                    JOBS.c.generation == 0,
                )
            ).first()
        return None if row is None else Job.from_row(row)

    def add_routing(
        self, job_id: int, *, destinations: Sequence[str], rules: Sequence[str], priority: int
    ) -> Job | None:
        """Add destinations and rules to a job that has not delivered yet (queued or running:
        the worker reads the destinations again before delivering), raising its priority if
        needed. ``None`` when the job has finished: its deliveries are made already."""
        with self._write() as connection:
            row = connection.execute(select(JOBS).where(JOBS.c.id == job_id).with_for_update()).first()
            if row is None or row.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
                return None
            merged_destinations = list(dict.fromkeys([*(row.destinations or [THIS_ORTHANC]), *destinations]))
            merged_rules = list(dict.fromkeys([*(row.rules or []), *rules]))
            updated = connection.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id)
                .values(
                    destinations=merged_destinations,
                    rules=merged_rules,
                    priority=max(row.priority, priority),
                    updated_at=self._now(connection),
                )
                .returning(*JOBS.c)
            ).one()
        return Job.from_row(updated)

    def cancel(self, job_id: int, *, actor: str) -> Job:
        """Take a queued job out of the queue: it becomes failed with the reason "cancelled by
        ``actor``", so :meth:`retry` can queue it again. Running, done and failed jobs cannot be
        cancelled (:class:`JobStateError`)."""
        require_text("actor", actor, 200)
        with self._write() as connection:
            now = self._now(connection)
            row = connection.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.status == JobStatus.QUEUED)
                .values(
                    status=JobStatus.FAILED,
                    error=f"Cancelled by {actor} before it ran; retry the job to queue it again.",
                    finished_at=now,
                    updated_at=now,
                )
                .returning(*JOBS.c)
            ).first()
            if row is None:
                status = JobStatus(LEASED_JOBS.existing_row(connection, job_id).status)
                raise JobStateError(f"job {job_id} is {status.value}; only a queued job can be cancelled")
        return Job.from_row(row)

    # -- working on jobs --------------------------------------------------------------------

    def claim(
        self,
        *,
        worker_id: str,
        lease_seconds: float,
        pipelines: Collection[str] | None = None,
    ) -> Job | None:
        """Take the next job for ``worker_id``, or ``None`` when there is none.

        The next job is the one with the highest priority, then the oldest, among the queued
        jobs and the running jobs whose lease expired (their worker died) with attempts left;
        ``pipelines`` restricts it to those pipeline names. The job becomes ``running`` with a
        lease of ``lease_seconds`` and one more attempt. Expired jobs without attempts left are
        failed first.
        """
        require_text("worker_id", worker_id, 200)
        lease = lease_duration(lease_seconds)
        names: builtins.list[str] | None = None
        if pipelines is not None:
            if isinstance(pipelines, str):
                raise TypeError(f"pipelines must be a collection of names, not the string {pipelines!r}")
            names = sorted(set(pipelines))
            if not names:
                return None
        with self._write() as connection:
            now = self._now(connection)
            reaped = self._reap(connection, now)
            candidate = JOBS.alias("candidate")
            query = select(candidate.c.id).where(
                LEASED_JOBS.claimable(candidate, now, waiting=candidate.c.status == JobStatus.QUEUED)
            )
            if names is not None:
                query = query.where(candidate.c.pipeline_name.in_(names))
            query = query.order_by(candidate.c.priority.desc(), candidate.c.created_at, candidate.c.id)
            row = LEASED_JOBS.take_next(connection, worker_id, now, lease, query, started_at=now)
        _log_reaped(reaped)
        return None if row is None else Job.from_row(row)

    def heartbeat(self, job_id: int, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease of a job ``worker_id`` holds; ``False`` if it no longer holds it."""
        lease = lease_duration(lease_seconds)
        with self._write() as connection:
            return LEASED_JOBS.heartbeat(connection, job_id, worker_id, self._now(connection), lease)

    def complete(
        self,
        job_id: int,
        worker_id: str,
        *,
        result: Mapping[str, Any],
        stage_timings: Mapping[str, float],
    ) -> Job:
        """Mark a job ``worker_id`` holds as done with its ``result``.

        Raises :class:`LeaseLostError` if the worker no longer holds the job.
        """
        values = {
            "status": JobStatus.DONE,
            "result": json_object("result", result),
            "stage_timings": _timings(stage_timings),
            "error": None,
        }
        return self._finish(job_id, worker_id, values)

    def fail(
        self,
        job_id: int,
        worker_id: str,
        *,
        error: str,
        stage_timings: Mapping[str, float],
    ) -> Job:
        """Mark a job ``worker_id`` holds as failed, ``error`` saying why.

        Raises :class:`LeaseLostError` if the worker no longer holds the job.
        """
        require_text("error", error)
        values = {
            "status": JobStatus.FAILED,
            "error": error,
            "stage_timings": _timings(stage_timings),
        }
        return self._finish(job_id, worker_id, values)

    def release(self, job_id: int, worker_id: str) -> Job:
        """Give a job ``worker_id`` holds back to the queue unfinished (the worker is stopping).

        The job keeps its place in the queue and the attempt does not count. Raises
        :class:`LeaseLostError` if the worker no longer holds the job.
        """
        with self._write() as connection:
            row = LEASED_JOBS.finish(
                connection,
                job_id,
                worker_id,
                self._now(connection),
                status=JobStatus.QUEUED,
                attempts=JOBS.c.attempts - 1,
                lease_owner=None,
                started_at=None,
            )
        return Job.from_row(row)

    # -- reading ----------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        """The job with id ``job_id``; :class:`JobNotFoundError` if there is none."""
        with self._read() as connection:
            return Job.from_row(LEASED_JOBS.existing_row(connection, job_id))

    def counts_by_status(self) -> dict[JobStatus, int]:
        """How many jobs are in each status (every status present, zeros included)."""
        with self._read() as connection:
            rows = connection.execute(select(JOBS.c.status, func.count()).group_by(JOBS.c.status)).all()
        counts = dict.fromkeys(JobStatus, 0)
        for status, count in rows:
            counts[JobStatus(status)] = count
        return counts

    def queue_room(self) -> QueueRoom:
        """How full the queue is. Intake calls ``queue_room().require()`` before routing a study
        automatically, so a full queue defers the study rather than dropping it."""
        with self._read() as connection:
            queued = connection.execute(
                select(func.count()).select_from(JOBS).where(JOBS.c.status == JobStatus.QUEUED)
            ).scalar_one()
        return QueueRoom(queued=int(queued), cap=self.max_queued_jobs)

    def get_state(self, key: str) -> str | None:
        """A value of the node's persistent state, ``None`` if never set."""
        with self._read() as connection:
            return connection.execute(select(STATE.c.value).where(STATE.c.key == key)).scalar_one_or_none()

    def states(self, prefix: str) -> dict[str, tuple[str, datetime]]:
        """Every state value whose key starts with ``prefix``, with when it was last set."""
        with self._read() as connection:
            rows = connection.execute(
                select(STATE.c.key, STATE.c.value, STATE.c.updated_at).where(STATE.c.key.startswith(prefix))
            ).all()
        return {row.key: (row.value, row.updated_at) for row in rows}

    def set_state(self, key: str, value: str) -> None:
        """Set (insert or replace) a value of the node's persistent state."""
        require_text("key", key, 200)
        if not isinstance(value, str):
            raise TypeError(f"state value for {key!r} must be a string, not {type(value).__name__}")
        with self._write() as connection:
            now = self._now(connection)
            statement = upsert_statement(connection, STATE).values(key=key, value=value, updated_at=now)
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=[STATE.c.key],
                    set_={"value": statement.excluded.value, "updated_at": now},
                )
            )

    def list(
        self,
        *,
        status: JobStatus | str | None = None,
        study: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[Job]:
        """Jobs, newest first.

        ``status`` keeps one status; ``study`` keeps the jobs of one study, given as its
        Orthanc id or its StudyInstanceUID. ``limit`` is 1 to 1000.
        """
        require_page(limit, offset)
        query = select(JOBS)
        if status is not None:
            query = query.where(JOBS.c.status == parse_enum(JobStatus, status, "job status"))
        if study is not None:
            query = query.where(or_(JOBS.c.orthanc_study_id == study, JOBS.c.study_instance_uid == study))
        query = query.order_by(JOBS.c.created_at.desc(), JOBS.c.id.desc())
        with self._read() as connection:
            rows = connection.execute(query.limit(limit).offset(offset)).all()
        return [Job.from_row(row) for row in rows]

    # -- internals --------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        # on SQLite: BEGIN IMMEDIATE, so the transaction holds the write lock from its start
        with self._write_engine.begin() as connection:
            yield connection

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.begin() as connection:
            yield connection

    def _now(self, connection: Connection) -> datetime:
        return database_now(connection, self._clock)

    def _stamps(self, now: datetime, *, generation: int, rerun_of: int | None) -> dict[str, Any]:
        return {
            "uid": str(uuid.uuid4()),
            "generation": generation,
            "rerun_of": rerun_of,
            "status": JobStatus.QUEUED,
            "attempts": 0,
            "max_attempts": self._max_attempts,
            "created_at": now,
            "updated_at": now,
        }

    def _insert_job(self, connection: Connection, values: dict[str, Any]) -> Row[Any] | None:
        """Insert a job; ``None`` if its (study, pipeline, version, generation) exists."""
        statement = upsert_statement(connection, JOBS)
        unique_key = [
            JOBS.c.study_instance_uid,
            JOBS.c.pipeline_name,
            JOBS.c.pipeline_version,
            JOBS.c.generation,
        ]
        return connection.execute(
            statement.values(**values).on_conflict_do_nothing(index_elements=unique_key).returning(*JOBS.c)
        ).first()

    def _reap(self, connection: Connection, now: datetime) -> builtins.list[Job]:
        expired = connection.execute(
            select(JOBS.c.id, JOBS.c.attempts)
            .where(*LEASED_JOBS.expired_without_attempts(now))
            .with_for_update(skip_locked=True)
        ).all()
        reaped = []
        for job_id, attempts in expired:
            row = connection.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id)
                .values(
                    status=JobStatus.FAILED,
                    error=(
                        f"The worker running this job stopped {attempts} times before "
                        "finishing it (its lease expired without a heartbeat each time), so "
                        "the node gave up; look for crashes or out-of-memory kills in the "
                        "worker logs, then retry the job."
                    ),
                    lease_expires_at=None,
                    finished_at=now,
                    updated_at=now,
                )
                .returning(*JOBS.c)
            ).one()
            reaped.append(Job.from_row(row))
        return reaped

    def _finish(self, job_id: int, worker_id: str, values: dict[str, Any]) -> Job:
        with self._write() as connection:
            now = self._now(connection)
            row = LEASED_JOBS.finish(connection, job_id, worker_id, now, **values, finished_at=now)
        return Job.from_row(row)


def _log_reaped(jobs: builtins.list[Job]) -> None:
    for job in jobs:
        logger.warning(
            "job failed: its worker stopped %d times",
            job.attempts,
            extra={
                "action": "reap",
                "job_id": job.id,
                "study_instance_uid": job.study_instance_uid,
                "pipeline": job.pipeline_name,
            },
        )


def _new_job_values(
    *,
    orthanc_study_id: str,
    study_instance_uid: str,
    pipeline_name: str,
    pipeline_version: str,
    trigger: JobTrigger,
    priority: int,
) -> dict[str, Any]:
    if not isinstance(trigger, JobTrigger):
        # callers parse what they are given where it enters (REST, the change follower)
        raise TypeError(f"trigger {trigger!r} must be a JobTrigger, not {type(trigger).__name__}")
    require_text("orthanc_study_id", orthanc_study_id, 64)
    require_text("study_instance_uid", study_instance_uid)
    if len(study_instance_uid) > MAX_UID_LENGTH:
        raise ValueError(
            f"StudyInstanceUID {study_instance_uid!r} is {len(study_instance_uid)} characters; "
            f"PS3.5 allows {MAX_UID_LENGTH}"
        )
    require_text("pipeline_name", pipeline_name, 100)
    require_text("pipeline_version", pipeline_version, 64)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority is {priority!r}; it must be an integer")
    return {
        "orthanc_study_id": orthanc_study_id,
        "study_instance_uid": study_instance_uid,
        "pipeline_name": pipeline_name,
        "pipeline_version": pipeline_version,
        "trigger": trigger.value,
        "priority": priority,
    }


def _timings(stage_timings: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(stage_timings, Mapping):
        raise TypeError(f"stage_timings must map stage names to seconds, not be {stage_timings!r}")
    timings: dict[str, float] = {}
    for stage, seconds in stage_timings.items():
        if (
            not isinstance(stage, str)
            or isinstance(seconds, bool)
            or not isinstance(seconds, numbers.Real)
            or not math.isfinite(seconds)
        ):
            raise ValueError(f"stage timing {stage!r}: {seconds!r} is not a stage name with seconds")
        timings[stage] = float(seconds)
    return timings
