"""Tables of the job database: the job queue itself and the node's small key/value state.

These models are the schema's single source of truth for Alembic's drift check
(``tests/unit/test_migrations.py``); the migrations in ``node/jobs/migrations/versions`` are
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
    status: Mapped[JobStatus] = mapped_column(
        Enum(
            JobStatus,
            name="job_status",
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=lambda statuses: [status.value for status in statuses],
        )
    )
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


class NodeStateRow(Base):
    """A small persistent value of the node, e.g. ``orthanc.last_change_seq``."""

    __tablename__ = "node_state"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
