"""The job queue on its default backend, a SQLite file: idempotent enqueue, atomic claims by
threads and processes, leases, retries and re-runs, the node's state."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from node.db import (
    Job,
    JobNotFoundError,
    JobStateError,
    JobStatus,
    JobStore,
    JobTrigger,
    LeaseLostError,
    create_engine_for,
    migrate,
)
from node.db.errors import QueueFullError
from node.db.jobs import QueueRoom
from node.errors import ConfigurationError
from tests.job_processes import claim_in_processes, enqueue_in_threads
from tests.unit.job_db import Clock

LEASE = 60.0


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    migrate(url)
    return url


@pytest.fixture
def store(database_url: str, clock: Clock):
    store = JobStore(database_url, clock=clock)
    yield store
    store.close()


STUDY = "1.2.826.0.1.3680043.8.498.1"


def job_fields(**changes: Any) -> dict[str, Any]:
    """The arguments of :meth:`JobStore.enqueue` for a stable-study job of STUDY, changed."""
    return {
        "orthanc_study_id": f"orthanc-{STUDY}",
        "study_instance_uid": STUDY,
        "pipeline_name": "ct-tissue",
        "pipeline_version": "1.0.0",
        "trigger": JobTrigger.STABLE_STUDY,
    } | changes


def enqueue(
    store: JobStore,
    study: str = STUDY,
    *,
    pipeline: str = "ct-tissue",
    version: str = "1.0.0",
    priority: int = 0,
    orthanc_id: str | None = None,
) -> Job:
    job = store.enqueue(
        orthanc_study_id=orthanc_id or f"orthanc-{study}",
        study_instance_uid=study,
        pipeline_name=pipeline,
        pipeline_version=version,
        trigger=JobTrigger.STABLE_STUDY,
        priority=priority,
    )
    assert job is not None
    return job


def run_to_failure(store: JobStore, job: Job) -> Job:
    claimed = store.claim(worker_id="w1", lease_seconds=LEASE)
    assert claimed is not None and claimed.id == job.id
    return store.fail(job.id, "w1", error="The series has no slices.", stage_timings={})


def run_to_done(store: JobStore, job: Job) -> Job:
    claimed = store.claim(worker_id="w1", lease_seconds=LEASE)
    assert claimed is not None and claimed.id == job.id
    return store.complete(job.id, "w1", result={}, stage_timings={})


# -- enqueue ---------------------------------------------------------------------------------


def test_enqueue_returns_a_queued_job_of_generation_0(store: JobStore, clock: Clock) -> None:
    job = enqueue(store, priority=5)
    assert (job.status, job.generation, job.attempts, job.priority) == (JobStatus.QUEUED, 0, 0, 5)
    assert job.max_attempts == 3
    assert job.trigger is JobTrigger.STABLE_STUDY
    assert job.created_at == clock.now
    assert len(job.uid) == 36


def test_enqueue_of_a_study_already_queued_for_that_pipeline_version_returns_none(
    store: JobStore,
) -> None:
    enqueue(store)
    again = store.enqueue(**job_fields(orthanc_study_id="orthanc-other-id", trigger=JobTrigger.REPLAY))
    assert again is None
    assert len(store.list()) == 1


def test_enqueue_of_a_study_whose_job_failed_returns_none(store: JobStore) -> None:
    run_to_failure(store, enqueue(store))
    assert store.enqueue(**job_fields(orthanc_study_id="x", trigger=JobTrigger.REPLAY)) is None


def test_enqueue_of_a_new_pipeline_version_queues_a_new_job(store: JobStore) -> None:
    first = enqueue(store, version="1.0.0")
    second = enqueue(store, version="1.1.0")
    assert first.id != second.id
    assert second.generation == 0


def test_concurrent_enqueues_of_one_study_queue_one_job(store: JobStore) -> None:
    assert sum(job is not None for job in enqueue_in_threads(store)) == 1
    assert len(store.list()) == 1


def test_enqueue_takes_a_trigger_member_not_a_string(store: JobStore) -> None:
    with pytest.raises(TypeError, match="trigger 'cron' must be a JobTrigger, not str"):
        store.enqueue(**job_fields(trigger="cron"))


def test_enqueue_rejects_a_study_instance_uid_longer_than_64_characters(store: JobStore) -> None:
    uid = "1." + "2" * 70
    with pytest.raises(ValueError, match="is 72 characters; PS3.5 allows 64"):
        store.enqueue(**job_fields(study_instance_uid=uid))


def test_enqueue_rejects_an_empty_pipeline_name(store: JobStore) -> None:
    with pytest.raises(ValueError, match="pipeline_name is ''; it must be a non-empty string"):
        store.enqueue(**job_fields(pipeline_name=""))


# -- rerun and retry -------------------------------------------------------------------------


def test_rerun_queues_the_next_generation_with_a_new_uid(store: JobStore) -> None:
    original = run_to_done(store, enqueue(store, priority=2))
    rerun = store.rerun(original.id)
    assert (rerun.generation, rerun.rerun_of, rerun.status) == (1, original.id, JobStatus.QUEUED)
    assert rerun.trigger is JobTrigger.MANUAL
    assert rerun.priority == 2
    assert rerun.uid != original.uid
    assert (rerun.study_instance_uid, rerun.pipeline_version) == (
        original.study_instance_uid,
        original.pipeline_version,
    )


def test_rerun_of_an_older_generation_takes_the_highest_generation_plus_one(
    store: JobStore,
) -> None:
    original = run_to_done(store, enqueue(store))
    run_to_done(store, store.rerun(original.id))
    assert store.rerun(original.id).generation == 2


def test_rerun_of_a_failed_job_is_allowed(store: JobStore) -> None:
    failed = run_to_failure(store, enqueue(store))
    assert store.rerun(failed.id).generation == 1


def test_rerun_of_a_running_job_is_refused(store: JobStore) -> None:
    job = enqueue(store)
    store.claim(worker_id="w1", lease_seconds=LEASE)
    with pytest.raises(JobStateError, match=f"job {job.id} is still running; it can be re-run"):
        store.rerun(job.id)


def test_rerun_while_another_run_of_the_study_is_queued_is_refused(store: JobStore) -> None:
    original = run_to_done(store, enqueue(store))
    queued = store.rerun(original.id)
    with pytest.raises(JobStateError, match=f"job {queued.id} runs the same study .* still queued"):
        store.rerun(original.id)


def test_rerun_of_a_missing_job_raises_not_found(store: JobStore) -> None:
    with pytest.raises(JobNotFoundError, match="there is no job 42"):
        store.rerun(42)


def test_retry_puts_a_failed_job_back_in_the_queue_as_the_same_job(store: JobStore) -> None:
    failed = run_to_failure(store, enqueue(store))
    retried = store.retry(failed.id)
    assert (retried.id, retried.uid, retried.generation) == (failed.id, failed.uid, 0)
    assert (retried.status, retried.attempts, retried.error) == (JobStatus.QUEUED, 0, None)
    assert retried.started_at is None and retried.finished_at is None


def test_retry_of_a_done_job_is_refused(store: JobStore) -> None:
    done = run_to_done(store, enqueue(store))
    with pytest.raises(JobStateError, match=f"job {done.id} is done, so there is nothing to retry"):
        store.retry(done.id)


def test_retry_of_a_queued_job_is_refused(store: JobStore) -> None:
    job = enqueue(store)
    with pytest.raises(JobStateError, match=f"job {job.id} is queued, not failed"):
        store.retry(job.id)


def test_retry_of_a_missing_job_raises_not_found(store: JobStore) -> None:
    with pytest.raises(JobNotFoundError, match="there is no job 7"):
        store.retry(7)


# -- claim -----------------------------------------------------------------------------------


def test_claim_of_an_empty_queue_returns_none(store: JobStore) -> None:
    assert store.claim(worker_id="w1", lease_seconds=LEASE) is None


def test_claim_makes_the_job_running_with_a_lease_and_one_attempt(store: JobStore, clock: Clock) -> None:
    enqueue(store)
    job = store.claim(worker_id="w1", lease_seconds=LEASE)
    assert job is not None
    assert (job.status, job.lease_owner, job.attempts) == (JobStatus.RUNNING, "w1", 1)
    assert job.lease_expires_at == clock.now + timedelta(seconds=LEASE)
    assert job.started_at == clock.now


def test_claim_takes_the_highest_priority_first_then_the_oldest(store: JobStore, clock: Clock) -> None:
    old_low = enqueue(store, "1.1", priority=0)
    clock.advance(1)
    new_high = enqueue(store, "1.2", priority=10)
    clock.advance(1)
    old_high = enqueue(store, "1.3", priority=10)
    clock.advance(1)
    newest_low = enqueue(store, "1.4", priority=0)
    order = []
    while (job := store.claim(worker_id="w1", lease_seconds=LEASE)) is not None:
        order.append(job.id)
    assert order == [new_high.id, old_high.id, old_low.id, newest_low.id]


def test_claim_takes_only_jobs_of_the_named_pipelines(store: JobStore) -> None:
    enqueue(store, pipeline="ct-tissue")
    brain = enqueue(store, pipeline="brain-extraction")
    job = store.claim(worker_id="w1", lease_seconds=LEASE, pipelines=["brain-extraction"])
    assert job is not None and job.id == brain.id
    assert store.claim(worker_id="w1", lease_seconds=LEASE, pipelines=["brain-extraction"]) is None


def test_claim_with_an_empty_pipeline_list_returns_none(store: JobStore) -> None:
    enqueue(store)
    assert store.claim(worker_id="w1", lease_seconds=LEASE, pipelines=[]) is None


def test_claim_rejects_a_lease_that_is_not_positive(store: JobStore) -> None:
    with pytest.raises(ValueError, match="lease_seconds is 0; it must be a positive number"):
        store.claim(worker_id="w1", lease_seconds=0)


def test_threads_claiming_at_once_get_each_job_exactly_once(database_url: str) -> None:
    store = JobStore(database_url)
    jobs = {enqueue(store, f"1.2.{n}").id for n in range(40)}
    barrier = threading.Barrier(8)

    def claim_all(worker: int) -> list[int]:
        barrier.wait()
        claimed = []
        while (job := store.claim(worker_id=f"thread-{worker}", lease_seconds=LEASE)) is not None:
            claimed.append(job.id)
        return claimed

    with ThreadPoolExecutor(8) as pool:
        claimed = [job_id for ids in pool.map(claim_all, range(8)) for job_id in ids]
    assert Counter(claimed) == Counter(jobs)
    store.close()


def test_processes_claiming_at_once_get_each_job_exactly_once(database_url: str) -> None:
    store = JobStore(database_url)
    jobs = {enqueue(store, f"1.2.{n}").id for n in range(40)}
    claimed = claim_in_processes(database_url)
    assert Counter(claimed) == Counter(jobs)
    finished = store.list(limit=100)
    assert {job.status for job in finished} == {JobStatus.DONE}
    assert {job.attempts for job in finished} == {1}
    store.close()


def test_claim_waits_for_another_writer_instead_of_failing(tmp_path: Path, database_url: str) -> None:
    store = JobStore(database_url)
    job = enqueue(store)
    locked = threading.Event()

    def hold_the_write_lock() -> None:
        other = sqlite3.connect(tmp_path / "jobs.sqlite", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(0.5)
        other.execute("COMMIT")
        other.close()

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    assert locked.wait(timeout=10)
    claimed = store.claim(worker_id="w1", lease_seconds=LEASE)
    holder.join()
    assert claimed is not None and claimed.id == job.id
    store.close()


# -- leases ----------------------------------------------------------------------------------


def test_a_running_job_is_not_claimed_again_while_its_lease_holds(store: JobStore, clock: Clock) -> None:
    enqueue(store)
    store.claim(worker_id="w1", lease_seconds=LEASE)
    clock.advance(LEASE - 1)
    assert store.claim(worker_id="w2", lease_seconds=LEASE) is None


def test_a_job_whose_lease_expired_is_claimed_again_with_one_more_attempt(
    store: JobStore, clock: Clock
) -> None:
    job = enqueue(store)
    store.claim(worker_id="w1", lease_seconds=LEASE)
    clock.advance(LEASE + 1)
    again = store.claim(worker_id="w2", lease_seconds=LEASE)
    assert again is not None and again.id == job.id
    assert (again.lease_owner, again.attempts, again.status) == ("w2", 2, JobStatus.RUNNING)


def test_heartbeat_extends_the_lease(store: JobStore, clock: Clock) -> None:
    job = enqueue(store)
    store.claim(worker_id="w1", lease_seconds=LEASE)
    clock.advance(LEASE - 1)
    assert store.heartbeat(job.id, "w1", LEASE) is True
    clock.advance(LEASE - 1)
    assert store.claim(worker_id="w2", lease_seconds=LEASE) is None
    assert store.get(job.id).lease_expires_at == clock.now + timedelta(seconds=1)


def test_heartbeat_after_another_worker_took_the_job_returns_false(store: JobStore, clock: Clock) -> None:
    job = enqueue(store)
    store.claim(worker_id="w1", lease_seconds=LEASE)
    clock.advance(LEASE + 1)
    store.claim(worker_id="w2", lease_seconds=LEASE)
    assert store.heartbeat(job.id, "w1", LEASE) is False


def test_complete_after_another_worker_took_the_job_raises_lease_lost(store: JobStore, clock: Clock) -> None:
    job = enqueue(store)
    store.claim(worker_id="w1", lease_seconds=LEASE)
    clock.advance(LEASE + 1)
    store.claim(worker_id="w2", lease_seconds=LEASE)
    with pytest.raises(LeaseLostError, match="worker 'w1' no longer holds job .*'w2' took it over"):
        store.complete(job.id, "w1", result={}, stage_timings={})


def test_fail_of_a_finished_job_raises_lease_lost(store: JobStore) -> None:
    job = run_to_done(store, enqueue(store))
    with pytest.raises(LeaseLostError, match=f"no longer holds job {job.id}: it is done now"):
        store.fail(job.id, "w1", error="late", stage_timings={})


def test_a_job_whose_worker_stopped_max_attempts_times_fails_with_a_reason(
    store: JobStore, clock: Clock
) -> None:
    job = enqueue(store)
    for worker in ("w1", "w2", "w3"):
        claimed = store.claim(worker_id=worker, lease_seconds=LEASE)
        assert claimed is not None and claimed.id == job.id
        clock.advance(LEASE + 1)
    assert store.claim(worker_id="w4", lease_seconds=LEASE) is None
    failed = store.get(job.id)
    assert (failed.status, failed.attempts, failed.finished_at) == (JobStatus.FAILED, 3, clock.now)
    assert failed.error is not None
    assert failed.error.startswith("The worker running this job stopped 3 times")


def test_release_puts_the_job_back_without_counting_the_attempt(store: JobStore) -> None:
    job = enqueue(store)
    store.claim(worker_id="w1", lease_seconds=LEASE)
    released = store.release(job.id, "w1")
    assert (released.status, released.attempts, released.lease_owner) == (JobStatus.QUEUED, 0, None)
    again = store.claim(worker_id="w2", lease_seconds=LEASE)
    assert again is not None and again.attempts == 1


# -- finishing -------------------------------------------------------------------------------


def test_complete_stores_the_result_and_stage_timings(store: JobStore, clock: Clock) -> None:
    job = enqueue(store)
    store.claim(worker_id="w1", lease_seconds=LEASE)
    clock.advance(12)
    result = {"seg_sop_instance_uid": "1.2.3.4", "segments": [{"label": "Brain", "ml": 1234.5}]}
    store.complete(job.id, "w1", result=result, stage_timings={"fetch": 0.5, "inference": 11})
    done = store.get(job.id)
    assert done.status is JobStatus.DONE
    assert done.result == result
    assert done.stage_timings == {"fetch": 0.5, "inference": 11.0}
    assert (done.finished_at, done.lease_expires_at, done.lease_owner) == (clock.now, None, "w1")


def test_complete_refuses_a_result_that_is_not_json(store: JobStore) -> None:
    job = enqueue(store)
    store.claim(worker_id="w1", lease_seconds=LEASE)
    with pytest.raises(ValueError, match="result cannot be stored as JSON"):
        store.complete(job.id, "w1", result={"when": datetime.now(UTC)}, stage_timings={})


def test_fail_stores_the_error(store: JobStore) -> None:
    failed = run_to_failure(store, enqueue(store))
    assert (failed.status, failed.error) == (JobStatus.FAILED, "The series has no slices.")
    assert store.get(failed.id).error == "The series has no slices."


# -- reading ---------------------------------------------------------------------------------


def test_get_of_a_missing_job_raises_not_found(store: JobStore) -> None:
    with pytest.raises(JobNotFoundError, match="there is no job 99"):
        store.get(99)


def test_list_returns_the_newest_first(store: JobStore, clock: Clock) -> None:
    first = enqueue(store, "1.1")
    clock.advance(1)
    second = enqueue(store, "1.2")
    assert [job.id for job in store.list()] == [second.id, first.id]


def test_list_pages_with_limit_and_offset(store: JobStore, clock: Clock) -> None:
    ids = []
    for n in range(5):
        ids.append(enqueue(store, f"1.{n}").id)
        clock.advance(1)
    assert [job.id for job in store.list(limit=2, offset=1)] == [ids[3], ids[2]]


def test_list_filters_by_status(store: JobStore) -> None:
    enqueue(store, "1.1")
    running = enqueue(store, "1.2", priority=1)
    store.claim(worker_id="w1", lease_seconds=LEASE)
    assert [job.id for job in store.list(status="running")] == [running.id]


def test_list_filters_by_study_instance_uid_or_orthanc_id(store: JobStore) -> None:
    first = enqueue(store, "1.1", orthanc_id="aaaa")
    second = enqueue(store, "1.1", pipeline="brain-extraction", orthanc_id="aaaa")
    enqueue(store, "1.2", orthanc_id="bbbb")
    expected = {first.id, second.id}
    assert {job.id for job in store.list(study="1.1")} == expected
    assert {job.id for job in store.list(study="aaaa")} == expected


def test_list_rejects_an_unknown_status(store: JobStore) -> None:
    with pytest.raises(ValueError, match="job status 'stuck' is not one of queued, running"):
        store.list(status="stuck")


def test_list_rejects_a_limit_above_1000(store: JobStore) -> None:
    with pytest.raises(ValueError, match="limit is 1001; it must be an integer from 1 to 1000"):
        store.list(limit=1001)


def test_counts_by_status_include_statuses_without_jobs(store: JobStore) -> None:
    enqueue(store, "1.1")
    enqueue(store, "1.2")
    run_to_done(store, enqueue(store, "1.3", priority=1))
    assert store.counts_by_status() == {
        JobStatus.QUEUED: 2,
        JobStatus.RUNNING: 0,
        JobStatus.DONE: 1,
        JobStatus.FAILED: 0,
    }


def test_to_json_gives_plain_json_with_iso_timestamps(store: JobStore) -> None:
    job = run_to_done(store, enqueue(store))
    document = json.loads(json.dumps(job.to_json()))
    assert document["status"] == "done"
    assert document["trigger"] == "stable-study"
    assert document["created_at"] == "2026-03-01T08:00:00+00:00"
    assert document["lease_expires_at"] is None


def test_a_job_snapshot_cannot_be_changed(store: JobStore) -> None:
    job = run_to_done(store, enqueue(store))
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.status = JobStatus.FAILED  # type: ignore[misc]
    with pytest.raises(TypeError):
        job.stage_timings["fetch"] = 1.0  # type: ignore[index]


# -- time ------------------------------------------------------------------------------------


def test_timestamps_read_back_timezone_aware_in_utc(database_url: str) -> None:
    store = JobStore(database_url)
    before = datetime.now(UTC)
    job = enqueue(store)
    stored = store.get(job.id)
    assert stored.created_at.tzinfo is UTC
    assert before <= stored.created_at <= datetime.now(UTC)
    store.close()


def test_a_clock_in_another_time_zone_is_stored_as_utc(database_url: str) -> None:
    tokyo = timezone(timedelta(hours=9))
    store = JobStore(database_url, clock=lambda: datetime(2026, 3, 1, 17, 0, tzinfo=tokyo))
    job = enqueue(store)
    assert store.get(job.id).created_at == datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    assert store.get(job.id).created_at.tzinfo is UTC
    store.close()


def test_a_clock_without_time_zone_is_refused(database_url: str) -> None:
    store = JobStore(database_url, clock=lambda: datetime(2026, 3, 1, 8, 0))
    with pytest.raises(ValueError, match="without a time zone"):
        enqueue(store)
    store.close()


# -- node state ------------------------------------------------------------------------------


def test_state_is_none_until_set(store: JobStore) -> None:
    assert store.get_state("orthanc.last_change_seq") is None


def test_set_state_replaces_the_previous_value(store: JobStore) -> None:
    store.set_state("orthanc.last_change_seq", "41")
    store.set_state("orthanc.last_change_seq", "42")
    assert store.get_state("orthanc.last_change_seq") == "42"


# -- engine ----------------------------------------------------------------------------------


def test_an_in_memory_sqlite_database_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="in-memory SQLite database, which the Orthanc"):
        create_engine_for("sqlite://")


def test_an_unsupported_backend_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="names backend 'mysql'"):
        create_engine_for("mysql://user:secret@db/jobs")


def test_sqlite_connections_use_wal_and_a_busy_timeout(database_url: str) -> None:
    engine = create_engine_for(database_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    engine.dispose()


# -- the queue cap ---------------------------------------------------------------------------


def test_queue_room_counts_queued_jobs_against_the_cap(database_url: str) -> None:
    store = JobStore(database_url, max_queued_jobs=2)
    first = enqueue(store, "1.2.3.1")
    assert store.queue_room() == QueueRoom(queued=1, cap=2)
    enqueue(store, "1.2.3.2")
    room = store.queue_room()
    assert room.full and room.to_json() == {"queued": 2, "max_queued_jobs": 2, "full": True}
    with pytest.raises(
        QueueFullError, match=r"full \(2 queued, worker.max_queued_jobs is 2\): new studies wait"
    ):
        room.require()
    run_to_done(store, first)  # a worker takes one: room again
    assert not store.queue_room().full
    store.close()


def test_without_a_cap_the_queue_is_never_full(store: JobStore) -> None:
    for index in range(3):
        enqueue(store, f"1.2.3.{index}")
    assert store.queue_room() == QueueRoom(queued=3, cap=None)
    store.queue_room().require()
