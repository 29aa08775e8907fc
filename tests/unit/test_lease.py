"""The lease helper shared by the job and delivery stores, driven directly on the job table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from node.db import JobNotFoundError, JobStatus, JobStore, LeaseLostError
from node.db.jobs import JOBS, LEASED_JOBS, JobTrigger

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
LEASE = timedelta(minutes=1)


@pytest.fixture
def job_id(engine: Engine) -> int:
    job = JobStore(engine, max_attempts=2).enqueue(
        orthanc_study_id="orthanc-1",
        study_instance_uid="1.2.3",
        pipeline_name="ct-tissue",
        pipeline_version="1.0.0",
        trigger=JobTrigger.MANUAL,
    )
    assert job is not None
    return job.id


def take(engine: Engine, job_id: int, worker_id: str, now: datetime = NOW) -> None:
    with engine.begin() as connection:
        assert LEASED_JOBS.take(connection, worker_id, now, LEASE, JOBS.c.id == job_id) is not None


def test_take_leases_the_row_to_the_worker_with_one_more_attempt(engine: Engine, job_id: int) -> None:
    with engine.begin() as connection:
        row = LEASED_JOBS.take(connection, "w1", NOW, LEASE, JOBS.c.id == job_id, started_at=NOW)
        missing = LEASED_JOBS.take(connection, "w1", NOW, LEASE, JOBS.c.id == job_id + 1)
    assert row is not None
    assert (row.status, row.lease_owner, row.lease_expires_at, row.attempts, row.started_at) == (
        JobStatus.RUNNING,
        "w1",
        NOW + LEASE,
        1,
        NOW,
    )
    assert missing is None


def test_take_next_retakes_an_expired_row_only_while_attempts_are_left(engine: Engine, job_id: int) -> None:
    def claim(worker_id: str, now: datetime) -> int | None:
        candidate = JOBS.alias("candidate")
        waiting = candidate.c.status == JobStatus.QUEUED
        query = select(candidate.c.id).where(LEASED_JOBS.claimable(candidate, now, waiting))
        with engine.begin() as connection:
            row = LEASED_JOBS.take_next(connection, worker_id, now, LEASE, query)
        return None if row is None else row.attempts

    assert claim("w1", NOW) == 1
    assert claim("w2", NOW + LEASE / 2) is None  # w1's lease still runs
    assert claim("w2", NOW + 2 * LEASE) == 2
    later = NOW + 4 * LEASE
    assert claim("w3", later) is None  # max_attempts is 2
    with engine.begin() as connection:
        expired = connection.execute(
            select(JOBS.c.id).where(*LEASED_JOBS.expired_without_attempts(later))
        ).scalars()
        assert list(expired) == [job_id]


def test_heartbeat_extends_only_the_holders_lease(engine: Engine, job_id: int) -> None:
    take(engine, job_id, "w1")
    later = NOW + LEASE / 2
    with engine.begin() as connection:
        assert not LEASED_JOBS.heartbeat(connection, job_id, "w2", later, LEASE)
        assert LEASED_JOBS.heartbeat(connection, job_id, "w1", later, LEASE)
        assert LEASED_JOBS.existing_row(connection, job_id).lease_expires_at == later + LEASE


def test_finish_refuses_a_row_another_worker_took_over(engine: Engine, job_id: int) -> None:
    take(engine, job_id, "w1")
    take(engine, job_id, "w2", NOW + 2 * LEASE)
    with engine.begin() as connection, pytest.raises(
        LeaseLostError,
        match=f"^worker 'w1' no longer holds job {job_id}: worker 'w2' took it over after the lease expired$",
    ):
        LEASED_JOBS.finish(connection, job_id, "w1", NOW, status=JobStatus.DONE)
    with engine.begin() as connection:
        assert LEASED_JOBS.existing_row(connection, job_id).status == JobStatus.RUNNING


def test_finish_ends_the_lease_and_then_refuses_to_finish_again(engine: Engine, job_id: int) -> None:
    take(engine, job_id, "w1")
    with engine.begin() as connection:
        row = LEASED_JOBS.finish(connection, job_id, "w1", NOW, status=JobStatus.DONE)
    assert (row.status, row.lease_owner, row.lease_expires_at) == (JobStatus.DONE, "w1", None)
    with engine.begin() as connection, pytest.raises(
        LeaseLostError, match=f"^worker 'w1' no longer holds job {job_id}: it is done now$"
    ):
        LEASED_JOBS.held_row(connection, job_id, "w1")


def test_existing_row_raises_the_tables_not_found_error(engine: Engine) -> None:
    with engine.begin() as connection, pytest.raises(JobNotFoundError, match="^there is no job 42$"):
        LEASED_JOBS.existing_row(connection, 42)
