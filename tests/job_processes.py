"""Several workers (processes or threads) against one job database: the same checks on SQLite
and PostgreSQL.

Process targets are module-level functions so `spawn`ed processes can import them.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from node.db import Job, JobStore, JobTrigger, migrate
from node.delivery.queue import DeliveryStore

LEASE = 60.0


def _claim_until_empty(url: str, worker_id: str, barrier, results) -> None:
    """Run in a separate process: claim and complete jobs until the queue is empty."""
    store = JobStore(url)
    barrier.wait()
    claimed = []
    while (job := store.claim(worker_id=worker_id, lease_seconds=LEASE)) is not None:
        claimed.append(job.id)
        time.sleep(0.005)  # some work, so that the other processes claim in between
        store.complete(job.id, worker_id, result={"worker": worker_id}, stage_timings={})
    store.close()
    results.put(claimed)


def claim_in_processes(url: str, count: int = 4) -> list[int]:
    """Ids of the jobs that ``count`` processes claimed and completed, started all at once."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(count)
    results = context.Queue()
    workers = [
        context.Process(target=_claim_until_empty, args=(url, f"process-{n}", barrier, results))
        for n in range(count)
    ]
    for worker in workers:
        worker.start()
    claimed = [job_id for _ in workers for job_id in results.get(timeout=120)]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    return claimed


def _migrate_after(url: str, barrier) -> None:
    """Run in a separate process: wait for the others, then migrate."""
    barrier.wait()
    migrate(url)


def migrate_in_processes(url: str, count: int = 4) -> list[int | None]:
    """Exit codes of ``count`` processes that migrate ``url`` at the same moment."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(count)
    processes = [context.Process(target=_migrate_after, args=(url, barrier)) for _ in range(count)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    return [process.exitcode for process in processes]


def enqueue_in_threads(store: JobStore, count: int = 8) -> list[Job | None]:
    """What ``count`` threads got back from enqueuing one study at the same moment."""
    barrier = threading.Barrier(count)

    def enqueue_once(_: int) -> Job | None:
        barrier.wait()
        return store.enqueue(
            orthanc_study_id="abc",
            study_instance_uid="1.2.3",
            pipeline_name="ct-tissue",
            pipeline_version="1.0.0",
            trigger=JobTrigger.REPLAY,
        )

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(enqueue_once, range(count)))


def deliver_in_threads(deliveries: DeliveryStore, count: int) -> list[int]:
    """Ids of the deliveries that ``count`` threads, started at once, claimed and delivered
    until none was due."""
    barrier = threading.Barrier(count)

    def claim_all(worker: int) -> list[int]:
        barrier.wait()
        claimed = []
        while (delivery := deliveries.claim_due(f"thread-{worker}", LEASE)) is not None:
            claimed.append(delivery.id)
            time.sleep(0.002)  # some work, so that the other threads claim in between
            deliveries.delivered(delivery.id, f"thread-{worker}")
        return claimed

    with ThreadPoolExecutor(count) as pool:
        return [delivery_id for ids in pool.map(claim_all, range(count)) for delivery_id in ids]
