"""Tables of the job database: the job queue, the node's small key/value state, the routing
rules and destinations, the deliveries of results to destinations, the studies routing could
not handle, and the audit trail.

These models are the schema's single source of truth for Alembic's drift check
(``tests/unit/test_migrations.py``); the migrations in ``node/db/migrations/versions`` are
written by hand to match them and never import this module.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Deterministic constraint and index names on every backend, so that later migrations can
#: refer to them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class JobStatus(enum.StrEnum):
    """Where a job is in its life.

    ``queued`` → ``running`` → ``done`` | ``failed``. A ``running`` job whose lease expired goes
    back to a worker (``running`` again, one more attempt) or, out of attempts, to ``failed``.
    """

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class DeliveryStatus(enum.StrEnum):
    """Where the delivery of one job's results to one destination is.

    ``pending`` → ``sending`` → ``delivered``; a failed attempt goes back to ``pending`` (due
    again after a backoff) until ``max_attempts`` is used up, then to ``failed``, where it stays
    until someone retries it. A ``sending`` delivery whose lease expired (its worker died) is
    claimed again.
    """

    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL stores ``timestamp with time zone``. SQLite has no timestamp type: the value is
    stored as UTC text of fixed width (which compares correctly as text) and read back with
    ``tzinfo=UTC``. Naive datetimes are refused, so local time can never slip in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"timestamp {value.isoformat()} has no time zone; pass an aware datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _status_enum(statuses: type[enum.StrEnum], name: str) -> Enum:
    """A status column's type: the enum's values as a string under a CHECK constraint named
    ``name``, alike on SQLite and PostgreSQL (the migrations create exactly this)."""
    return Enum(
        statuses,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class JobRow(Base):
    """One run of one pipeline (name and version) on one study."""

    __tablename__ = "jobs"
    __table_args__ = (
        # An automatic trigger (stable study, /changes replay) can never queue the same study
        # twice for one pipeline version: every automatic job has generation 0. A user's re-run
        # takes the next free generation.
        UniqueConstraint(
            "study_instance_uid",
            "pipeline_name",
            "pipeline_version",
            "generation",
            name="uq_jobs_study_pipeline_generation",
        ),
        # The claim's scan: queued (or expired running) jobs, highest priority, oldest first.
        Index("ix_jobs_claim", "status", "priority", "created_at"),
        Index("ix_jobs_orthanc_study_id", "orthanc_study_id"),
        Index("ix_jobs_created_at", "created_at"),
        # never hand out the id of a deleted job again (REST URLs name jobs by id)
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: random UUID; result UIDs are derived from it so that a retried job rewrites the same
    #: objects instead of adding new ones
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    orthanc_study_id: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    pipeline_name: Mapped[str] = mapped_column(String(100))
    pipeline_version: Mapped[str] = mapped_column(String(64))
    #: 0 for the automatic job; 1, 2, … for each user-requested re-run
    generation: Mapped[int] = mapped_column(Integer)
    status: Mapped[JobStatus] = mapped_column(_status_enum(JobStatus, "job_status"))
    #: how often a worker has claimed the job (a claim after an expired lease counts again)
    attempts: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    #: higher runs first
    priority: Mapped[int] = mapped_column(Integer)
    #: the worker holding (or, once finished, the worker that last held) the job
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: why the job failed, as a sentence a PACS administrator can act on
    error: Mapped[str | None] = mapped_column(Text)
    #: seconds per stage, e.g. {"fetch": 0.5, "inference": 12.1}
    stage_timings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: what the job produced (SOP Instance UIDs, segments, …)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    rerun_of: Mapped[int | None] = mapped_column(Integer, ForeignKey("jobs.id", ondelete="SET NULL"))
    trigger: Mapped[str] = mapped_column(String(32))
    #: names of the destinations the results go to (None: this Orthanc, as before rules)
    destinations: Mapped[list[str] | None] = mapped_column(JSON)
    #: names of the routing rules that queued the job
    rules: Mapped[list[str] | None] = mapped_column(JSON)
    #: the input series the routing chose (None: the pipeline chooses at fetch time)
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))


class WaitStatus(enum.StrEnum):
    """Where a study waiting for the series a rule requires stands."""

    WAITING = "waiting"
    #: the series arrived; the rule's jobs were queued
    QUEUED = "queued"
    #: the wait ended without them and the rule says skip
    SKIPPED = "skipped"
    #: an admin forced the study complete
    FORCED = "forced"


class StudyWaitRow(Base):
    """A study that a rule matches but that lacks series the rule requires (a FLAIR, say)."""

    __tablename__ = "study_waits"
    __table_args__ = (
        UniqueConstraint("orthanc_study_id", "rule", name="uq_study_waits_study_rule"),
        Index("ix_study_waits_due", "status", "deadline"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    orthanc_study_id: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(64))
    status: Mapped[WaitStatus] = mapped_column(_status_enum(WaitStatus, "wait_status"))
    missing: Mapped[list[str]] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text)
    first_stable_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deadline: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IntakeProblemStatus(enum.StrEnum):
    """Where a study whose routing failed stands."""

    #: a transient failure (Orthanc or the database busy): tried again after a backoff
    RETRYING = "retrying"
    #: a lasting failure, or out of attempts: left until an admin retries it
    FAILED = "failed"


class IntakeProblemRow(Base):
    """A study the change follower could not route. It is set aside here, so the studies after
    it are routed; one row per Orthanc study, removed once the study is routed."""

    __tablename__ = "intake_problems"
    __table_args__ = (
        Index("ix_intake_problems_due", "status", "next_attempt_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    orthanc_study_id: Mapped[str] = mapped_column(String(64), unique=True)
    #: when the summary got that far; unbounded, since a UID too long is one of the problems
    study_instance_uid: Mapped[str | None] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(String(32))
    status: Mapped[IntakeProblemStatus] = mapped_column(
        _status_enum(IntakeProblemStatus, "intake_problem_status")
    )
    reason: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    first_failed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_failed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: when a retrying study is tried again; None once it failed for good
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class StagedResultRow(Base):
    """A job's result object, kept until every destination has it, when the hosts of a cluster
    share no disk (node.delivery.staging): Part 10 bytes, zlib-compressed."""

    __tablename__ = "staged_results"

    job_uid: Mapped[str] = mapped_column(String(36), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class NodeStateRow(Base):
    """A small persistent value of the node, e.g. ``orthanc.last_change_seq``."""

    __tablename__ = "node_state"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RuleRow(Base):
    """A routing rule, stored as the document :class:`node.rules.model.Rule` dumps."""

    __tablename__ = "rules"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DestinationRow(Base):
    """A destination of results (Orthanc, DICOM C-STORE peer, DICOMweb server).

    ``document`` holds the whole configuration *including its secrets, stored as given*
    (passwords, tokens): the database must be protected like the node's configuration file, and
    the API layer must never return them (the audit trail stores them masked).
    """

    __tablename__ = "destinations"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DeliveryRow(Base):
    """The delivery of one job's results to one destination: its own step, retried on its own.

    ``destination`` is the destination's name, not a foreign key: a delivery keeps its history
    when the destination is renamed or deleted.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("job_id", "destination", name="uq_deliveries_job_id_destination"),
        # the claim's scan: due deliveries, earliest first, whatever their destination
        Index("ix_deliveries_claim", "status", "next_attempt_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(Integer, ForeignKey("jobs.id", ondelete="CASCADE"))
    destination: Mapped[str] = mapped_column(String(64))
    status: Mapped[DeliveryStatus] = mapped_column(_status_enum(DeliveryStatus, "delivery_status"))
    #: how often a worker has claimed the delivery (a claim after an expired lease counts again)
    attempts: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    #: when a pending delivery is due (creation time, then after each failure the backoff)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: why the last attempt failed, as a sentence a PACS administrator can act on
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditRow(Base):
    """One change of a rule, destination or setting, or one manual action: who, when, what.

    ``before`` and ``after`` are the documents before and after the change (``None`` for a
    creation, a deletion or an action without a previous state), secrets masked.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_subject", "subject_type", "subject_name"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_name: Mapped[str] = mapped_column(String(200))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
