"""The job queue on a real PostgreSQL server: the FOR UPDATE SKIP LOCKED claim, leases on the
server's clock, the advisory-locked migration and the drift check; the deliveries' claim."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from node.db import Job, JobStatus, JobStore, JobTrigger, create_engine_for, migrate
from node.db.database import alembic_config
from node.db.models import Base
from node.db.staged import StagedResults
from node.delivery.queue import DeliveryStore
from node.devtools.postgres import PostgresCluster, PostgresUnavailable, running_cluster
from node.intake.leader import RoutingLeadership
from tests.job_processes import (
    claim_in_processes,
    deliver_in_threads,
    enqueue_in_threads,
    migrate_in_processes,
)
from tests.requirements import skip_or_fail
from tests.unit.job_db import Clock

pytestmark = pytest.mark.integration

LEASE = 60.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with ExitStack() as stack:
        try:
            running = stack.enter_context(running_cluster())
        except PostgresUnavailable as error:
            skip_or_fail(f"no PostgreSQL for the job queue tests: {error}")
        yield running


@pytest.fixture
def empty_database(cluster: PostgresCluster) -> str:
    return cluster.create_database(f"jobs_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def database_url(empty_database: str) -> str:
    migrate(empty_database)
    return empty_database


def enqueue(store: JobStore, study: str, *, priority: int = 0) -> Job:
    job = store.enqueue(
        orthanc_study_id=f"orthanc-{study}",
        study_instance_uid=study,
        pipeline_name="ct-tissue",
        pipeline_version="1.0.0",
        trigger=JobTrigger.STABLE_STUDY,
        priority=priority,
    )
    assert job is not None
    return job


def test_a_postgresql_url_without_driver_uses_psycopg_3() -> None:
    engine = create_engine_for("postgresql://ai:secret@db.example/jobs")
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


def test_migrated_database_is_at_head_and_matches_the_models(database_url: str) -> None:
    engine = create_engine_for(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert (
            context.get_current_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
        )
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_processes_migrating_one_new_database_at_once_all_succeed(empty_database: str) -> None:
    assert migrate_in_processes(empty_database) == [0, 0, 0, 0]
    migrate(empty_database)  # and once more: nothing left to do


def test_processes_claiming_at_once_get_each_job_exactly_once(database_url: str) -> None:
    store = JobStore(database_url)
    jobs = {enqueue(store, f"1.2.{n}").id for n in range(40)}
    claimed = claim_in_processes(database_url)
    assert Counter(claimed) == Counter(jobs)
    finished = store.list(limit=100)
    assert {job.status for job in finished} == {JobStatus.DONE}
    assert {job.attempts for job in finished} == {1}
    store.close()


def test_claim_skips_a_job_another_transaction_has_locked(database_url: str) -> None:
    store = JobStore(database_url)
    first = enqueue(store, "1.1", priority=1)
    second = enqueue(store, "1.2")
    with store.engine.connect() as other:
        other.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": first.id})
        claimed = store.claim(worker_id="w1", lease_seconds=LEASE)
        other.rollback()
    assert claimed is not None and claimed.id == second.id
    store.close()


def test_claim_takes_the_highest_priority_first_then_the_oldest(database_url: str) -> None:
    clock = Clock()
    store = JobStore(database_url, clock=clock)
    low = enqueue(store, "1.1")
    clock.advance(1)
    high = enqueue(store, "1.2", priority=5)
    order = [store.claim(worker_id="w", lease_seconds=LEASE) for _ in range(2)]
    assert [job.id for job in order if job is not None] == [high.id, low.id]
    store.close()


def test_concurrent_enqueues_of_one_study_queue_one_job(database_url: str) -> None:
    store = JobStore(database_url)
    assert sum(job is not None for job in enqueue_in_threads(store)) == 1
    store.close()


def test_a_job_whose_lease_expired_is_claimed_again_with_one_more_attempt(
    database_url: str,
) -> None:
    clock = Clock()
    store = JobStore(database_url, clock=clock)
    job = enqueue(store, "1.2.3")
    store.claim(worker_id="w1", lease_seconds=LEASE)
    clock.advance(LEASE - 1)
    assert store.claim(worker_id="w2", lease_seconds=LEASE) is None
    clock.advance(2)
    again = store.claim(worker_id="w2", lease_seconds=LEASE)
    assert again is not None and again.id == job.id
    assert (again.lease_owner, again.attempts) == ("w2", 2)
    assert store.heartbeat(job.id, "w1", LEASE) is False
    store.close()


def test_a_job_whose_worker_stopped_max_attempts_times_fails_with_a_reason(
    database_url: str,
) -> None:
    clock = Clock()
    store = JobStore(database_url, clock=clock, max_attempts=2)
    job = enqueue(store, "1.2.3")
    for worker in ("w1", "w2"):
        store.claim(worker_id=worker, lease_seconds=LEASE)
        clock.advance(LEASE + 1)
    assert store.claim(worker_id="w3", lease_seconds=LEASE) is None
    failed = store.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert failed.error.startswith("The worker running this job stopped 2 times")
    store.close()


def test_leases_follow_the_server_clock_and_read_back_in_utc(database_url: str) -> None:
    store = JobStore(database_url)
    before = datetime.now(UTC)
    enqueue(store, "1.2.3")
    job = store.claim(worker_id="w1", lease_seconds=LEASE)
    assert job is not None and job.lease_expires_at is not None and job.started_at is not None
    assert job.started_at.tzinfo is UTC
    assert job.lease_expires_at - job.started_at == timedelta(seconds=LEASE)
    assert abs(job.started_at - before) < timedelta(seconds=30)
    store.close()


def test_rerun_takes_the_next_generation(database_url: str) -> None:
    store = JobStore(database_url)
    job = enqueue(store, "1.2.3")
    store.claim(worker_id="w1", lease_seconds=LEASE)
    store.complete(job.id, "w1", result={"segments": []}, stage_timings={"fetch": 0.1})
    rerun = store.rerun(job.id)
    assert (rerun.generation, rerun.rerun_of) == (1, job.id)
    store.close()


def test_set_state_replaces_the_previous_value(database_url: str) -> None:
    store = JobStore(database_url)
    store.set_state("orthanc.last_change_seq", "41")
    store.set_state("orthanc.last_change_seq", "42")
    assert store.get_state("orthanc.last_change_seq") == "42"
    store.close()


def test_threads_claiming_deliveries_at_once_get_each_exactly_once(database_url: str) -> None:
    store = JobStore(database_url)
    deliveries = DeliveryStore(store.engine)
    expected = {
        delivery.id
        for n in range(10)
        for delivery in deliveries.create_for_job(enqueue(store, f"1.2.{n}").id, ["a", "b", "c"], 3)
    }
    claimed = deliver_in_threads(deliveries, 6)
    assert Counter(claimed) == Counter(expected)
    assert {delivery.attempts for delivery in deliveries.list(limit=100)} == {1}
    store.close()


def test_delivery_claim_skips_a_delivery_another_transaction_has_locked(database_url: str) -> None:
    store = JobStore(database_url)
    deliveries = DeliveryStore(store.engine)
    first, second = deliveries.create_for_job(enqueue(store, "1.1").id, ["a", "b"], 3)
    with store.engine.connect() as other:
        other.execute(text("SELECT id FROM deliveries WHERE id = :id FOR UPDATE"), {"id": first.id})
        claimed = deliveries.claim_due("w1", LEASE)
        other.rollback()
    assert claimed is not None and claimed.id == second.id
    store.close()


def test_one_process_routes_at_a_time_and_another_takes_over_when_it_stops(database_url: str) -> None:
    engine = create_engine_for(database_url)
    first, second = RoutingLeadership(engine), RoutingLeadership(engine)
    assert first.lead() and first.leading
    assert not second.lead() and not second.leading
    assert first.lead()  # still its own
    first.release()  # as when its Orthanc stops, or dies and PostgreSQL ends its session
    assert second.lead()
    assert not first.lead()
    second.release()


def test_results_kept_in_the_database_read_back_as_written(database_url: str) -> None:
    rows = StagedResults(create_engine_for(database_url))
    objects = [("1.2.3.1", b"DICM" + bytes(100_000)), ("1.2.3.2", b"DICM" + b"sr")]
    rows.write("job-uid-1", objects)
    assert rows.read("job-uid-1") == [data for _, data in objects]
    rows.write("job-uid-1", objects[:1])  # a job run again replaces what it kept
    assert rows.read("job-uid-1") == [objects[0][1]]
    rows.remove("job-uid-1")
    assert rows.read("job-uid-1") == []
