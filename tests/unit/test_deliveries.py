"""Deliveries on the default backend, a SQLite file: one step per (job, destination), claimed
by due time whatever the destination, retried with backoff, then failed until retried."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import Engine, text

from node.db import JobNotFoundError, JobStore, LeaseLostError
from node.db.jobs import JobTrigger
from node.db.models import DeliveryStatus
from node.delivery.queue import Delivery, DeliveryStateError, DeliveryStore
from tests.job_processes import deliver_in_threads
from tests.unit.job_db import Clock

LEASE = 60.0


def one_minute(_attempts: int) -> timedelta:
    return timedelta(minutes=1)


@pytest.fixture
def deliveries(engine: Engine, clock: Clock) -> DeliveryStore:
    return DeliveryStore(engine, clock=clock)


def new_job(engine: Engine, study: str = "1.2.3") -> int:
    job = JobStore(engine).enqueue(
        orthanc_study_id=f"orthanc-{study}",
        study_instance_uid=study,
        pipeline_name="ct-tissue",
        pipeline_version="1.0.0",
        trigger=JobTrigger.MANUAL,
    )
    assert job is not None
    return job.id


def claimed_delivery(engine: Engine, deliveries: DeliveryStore, max_attempts: int = 3) -> Delivery:
    """The delivery to "pacs" of a new job, claimed by worker w1."""
    deliveries.create_for_job(new_job(engine), ["pacs"], max_attempts=max_attempts)
    claimed = deliveries.claim_due("w1", LEASE)
    assert claimed is not None
    return claimed


def test_create_for_job_makes_one_pending_delivery_per_destination(
    engine: Engine, deliveries: DeliveryStore, clock: Clock
) -> None:
    job_id = new_job(engine)
    created = deliveries.create_for_job(job_id, ["pacs", "archive"], max_attempts=3)
    assert [(d.destination, d.status, d.attempts, d.max_attempts) for d in created] == [
        ("pacs", DeliveryStatus.PENDING, 0, 3),
        ("archive", DeliveryStatus.PENDING, 0, 3),
    ]
    assert {d.next_attempt_at for d in created} == {clock.now}


def test_create_for_job_twice_keeps_the_existing_deliveries(
    engine: Engine, deliveries: DeliveryStore
) -> None:
    job_id = new_job(engine)
    first = deliveries.create_for_job(job_id, ["pacs"], max_attempts=3)
    claimed = deliveries.claim_due("w1", LEASE)
    assert claimed is not None
    again = deliveries.create_for_job(job_id, ["pacs", "archive"], max_attempts=3)
    assert [(d.destination, d.status) for d in again] == [
        ("pacs", DeliveryStatus.SENDING),
        ("archive", DeliveryStatus.PENDING),
    ]
    assert again[0].id == first[0].id


def test_create_for_a_missing_job_raises_not_found(deliveries: DeliveryStore) -> None:
    with pytest.raises(JobNotFoundError, match="there is no job 42"):
        deliveries.create_for_job(42, ["pacs"], max_attempts=3)


def test_deleting_a_job_deletes_its_deliveries(engine: Engine, deliveries: DeliveryStore) -> None:
    job_id = new_job(engine)
    deliveries.create_for_job(job_id, ["pacs"], max_attempts=3)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": job_id})
    assert deliveries.list() == []


def test_claim_makes_the_delivery_sending_with_a_lease_and_one_attempt(
    engine: Engine, deliveries: DeliveryStore, clock: Clock
) -> None:
    deliveries.create_for_job(new_job(engine), ["pacs"], max_attempts=3)
    claimed = deliveries.claim_due("w1", LEASE)
    assert claimed is not None
    assert (claimed.status, claimed.attempts, claimed.lease_owner) == (DeliveryStatus.SENDING, 1, "w1")
    assert claimed.lease_expires_at == clock.now + timedelta(seconds=LEASE)
    assert deliveries.claim_due("w2", LEASE) is None


def test_delivered_marks_the_delivery_delivered(
    engine: Engine, deliveries: DeliveryStore, clock: Clock
) -> None:
    claimed = claimed_delivery(engine, deliveries)
    done = deliveries.delivered(claimed.id, "w1")
    assert (done.status, done.delivered_at) == (DeliveryStatus.DELIVERED, clock.now)


def test_delivered_by_a_worker_not_holding_it_raises_lease_lost(
    engine: Engine, deliveries: DeliveryStore
) -> None:
    claimed = claimed_delivery(engine, deliveries)
    with pytest.raises(LeaseLostError, match="worker 'w2' no longer holds delivery"):
        deliveries.delivered(claimed.id, "w2")


def test_a_failed_attempt_makes_the_delivery_pending_after_the_backoff(
    engine: Engine, deliveries: DeliveryStore, clock: Clock
) -> None:
    claimed = claimed_delivery(engine, deliveries)
    failed = deliveries.failed_attempt(claimed.id, "w1", "connection refused", backoff=one_minute)
    assert (failed.status, failed.last_error) == (DeliveryStatus.PENDING, "connection refused")
    assert failed.next_attempt_at == clock.now + timedelta(minutes=1)
    clock.advance(59)
    assert deliveries.claim_due("w1", LEASE) is None
    clock.advance(1)
    again = deliveries.claim_due("w1", LEASE)
    assert again is not None and (again.id, again.attempts) == (claimed.id, 2)


def test_the_backoff_is_given_the_attempts_so_far(engine: Engine, deliveries: DeliveryStore) -> None:
    deliveries.create_for_job(new_job(engine), ["pacs"], max_attempts=5)
    seen = []

    def backoff(attempts: int) -> timedelta:
        seen.append(attempts)
        return timedelta(0)

    for _ in range(3):
        claimed = deliveries.claim_due("w1", LEASE)
        assert claimed is not None
        deliveries.failed_attempt(claimed.id, "w1", "refused", backoff=backoff)
    assert seen == [1, 2, 3]


def test_a_delivery_out_of_attempts_stays_failed(engine: Engine, deliveries: DeliveryStore) -> None:
    deliveries.create_for_job(new_job(engine), ["pacs"], max_attempts=2)
    for _ in range(2):
        claimed = deliveries.claim_due("w1", LEASE)
        assert claimed is not None
        last = deliveries.failed_attempt(
            claimed.id, "w1", "connection refused", backoff=lambda _: timedelta(0)
        )
    assert (last.status, last.attempts, last.last_error) == (DeliveryStatus.FAILED, 2, "connection refused")
    assert deliveries.claim_due("w1", LEASE) is None


def test_retry_makes_a_failed_delivery_due_now_with_attempts_reset(
    engine: Engine, deliveries: DeliveryStore, clock: Clock
) -> None:
    claimed = claimed_delivery(engine, deliveries, max_attempts=1)
    deliveries.failed_attempt(claimed.id, "w1", "refused", backoff=one_minute)
    clock.advance(3600)
    retried = deliveries.retry(claimed.id)
    assert (retried.status, retried.attempts, retried.next_attempt_at) == (
        DeliveryStatus.PENDING,
        0,
        clock.now,
    )
    again = deliveries.claim_due("w1", LEASE)
    assert again is not None and again.id == claimed.id


def test_retry_of_a_pending_delivery_is_refused(engine: Engine, deliveries: DeliveryStore) -> None:
    [pending] = deliveries.create_for_job(new_job(engine), ["pacs"], max_attempts=3)
    with pytest.raises(DeliveryStateError, match=f"delivery {pending.id} is pending, not failed"):
        deliveries.retry(pending.id)


def test_a_failing_destination_does_not_hold_up_another(
    engine: Engine, deliveries: DeliveryStore, clock: Clock
) -> None:
    first_job, second_job = new_job(engine, "1.1"), new_job(engine, "1.2")
    deliveries.create_for_job(first_job, ["down"], max_attempts=5)
    clock.advance(1)
    deliveries.create_for_job(second_job, ["up"], max_attempts=5)
    down = deliveries.claim_due("w1", LEASE)
    assert down is not None and down.destination == "down"
    deliveries.failed_attempt(down.id, "w1", "refused", backoff=one_minute)
    up = deliveries.claim_due("w1", LEASE)
    assert up is not None and up.destination == "up"


def test_claim_takes_the_delivery_due_the_longest_first(
    engine: Engine, deliveries: DeliveryStore, clock: Clock
) -> None:
    deliveries.create_for_job(new_job(engine, "1.1"), ["b"], max_attempts=3)
    clock.advance(1)
    deliveries.create_for_job(new_job(engine, "1.2"), ["a"], max_attempts=3)
    order = [deliveries.claim_due("w1", LEASE) for _ in range(2)]
    assert [d.destination for d in order if d is not None] == ["b", "a"]


def test_a_delivery_whose_lease_expired_is_claimed_again(
    engine: Engine, deliveries: DeliveryStore, clock: Clock
) -> None:
    claimed = claimed_delivery(engine, deliveries)
    clock.advance(LEASE + 1)
    again = deliveries.claim_due("w2", LEASE)
    assert again is not None and (again.id, again.lease_owner, again.attempts) == (claimed.id, "w2", 2)


def test_a_delivery_whose_worker_stopped_on_its_last_attempt_fails(
    engine: Engine, deliveries: DeliveryStore, clock: Clock
) -> None:
    [delivery] = deliveries.create_for_job(new_job(engine), ["pacs"], max_attempts=1)
    deliveries.claim_due("w1", LEASE)
    clock.advance(LEASE + 1)
    assert deliveries.claim_due("w2", LEASE) is None
    failed = deliveries.get(delivery.id)
    assert failed.status is DeliveryStatus.FAILED
    assert failed.last_error is not None and "stopped before finishing it" in failed.last_error


def test_for_job_and_list_by_status(engine: Engine, deliveries: DeliveryStore) -> None:
    job_id = new_job(engine)
    deliveries.create_for_job(job_id, ["pacs", "archive"], max_attempts=3)
    deliveries.claim_due("w1", LEASE)
    assert [d.destination for d in deliveries.for_job(job_id)] == ["pacs", "archive"]
    assert [d.destination for d in deliveries.list(status="pending")] == ["archive"]
    with pytest.raises(ValueError, match="delivery status 'lost' is not one of"):
        deliveries.list(status="lost")


def test_threads_claiming_at_once_get_each_delivery_exactly_once(engine: Engine) -> None:
    store = DeliveryStore(engine)
    expected = {
        delivery.id
        for n in range(10)
        for delivery in store.create_for_job(
            new_job(engine, f"1.2.{n}"), ["a", "b", "c", "d"], max_attempts=3
        )
    }
    claimed = deliver_in_threads(store, 8)
    assert Counter(claimed) == Counter(expected)
