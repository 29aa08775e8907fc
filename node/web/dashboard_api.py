"""GET /ai/dashboard: the numbers an admin looks at first, in one request.

Counts come from the stores; the recent failures are one read-only query joining deliveries to
their jobs (the stores read one table at a time, and a dashboard polled every few seconds
should not make a query per failed delivery).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Table, select

from node.db.common import to_iso
from node.db.jobs import JobStore
from node.db.models import DeliveryRow, DeliveryStatus, JobRow, JobStatus
from node.delivery.queue import DeliveryStore
from node.web.http import ApiResponse, Request
from node.web.params import answers
from node.web.routes import Operation, Route

JOBS = cast(Table, JobRow.__table__)
DELIVERIES = cast(Table, DeliveryRow.__table__)
RECENT_FAILURES = 20

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "queue_depth": {"type": "integer"},
        "jobs": {"type": "object", "additionalProperties": {"type": "integer"}},
        "deliveries": {"type": "object", "additionalProperties": {"type": "integer"}},
        "recent_failures": {"type": "array", "items": {"type": "object"}},
        "waiting_studies": {"type": "integer"},
    },
}


class DashboardApi:
    def __init__(self, jobs: JobStore, deliveries: DeliveryStore, waiting_studies: Callable[[], int]) -> None:
        self.jobs = jobs
        self.deliveries = deliveries
        self.engine = jobs.engine
        self.waiting_studies = waiting_studies

    def routes(self) -> list[Route]:
        return [
            Route(
                "/ai/dashboard",
                (
                    Operation(
                        "GET",
                        answers(self.dashboard),
                        "Queue depth, jobs and deliveries per status, recent failures",
                        response_schema=SCHEMA,
                    ),
                ),
            )
        ]

    def dashboard(self, request: Request) -> ApiResponse:
        with self.engine.begin() as connection:
            failed_jobs = connection.execute(
                select(JOBS)
                .where(JOBS.c.status == JobStatus.FAILED)
                .order_by(JOBS.c.updated_at.desc(), JOBS.c.id.desc())
                .limit(RECENT_FAILURES)
            ).all()
            failed_deliveries = connection.execute(
                select(DELIVERIES, JOBS.c.study_instance_uid, JOBS.c.pipeline_name)
                .join(JOBS, JOBS.c.id == DELIVERIES.c.job_id)
                .where(DELIVERIES.c.status == DeliveryStatus.FAILED)
                .order_by(DELIVERIES.c.updated_at.desc(), DELIVERIES.c.id.desc())
                .limit(RECENT_FAILURES)
            ).all()
        failures = [
            {
                "kind": "job",
                "id": row.id,
                "job_id": row.id,
                "at": to_iso(row.updated_at),
                "study_instance_uid": row.study_instance_uid,
                "pipeline": row.pipeline_name,
                "destination": None,
                "error": row.error or "",
            }
            for row in failed_jobs
        ] + [
            {
                "kind": "delivery",
                "id": row.id,
                "job_id": row.job_id,
                "at": to_iso(row.updated_at),
                "study_instance_uid": row.study_instance_uid,
                "pipeline": row.pipeline_name,
                "destination": row.destination,
                "error": row.last_error or "",
            }
            for row in failed_deliveries
        ]
        failures.sort(key=lambda failure: str(failure["at"]), reverse=True)
        job_counts = self.jobs.counts_by_status()
        return ApiResponse(
            200,
            {
                "queue_depth": job_counts[JobStatus.QUEUED],
                "jobs": {status.value: count for status, count in job_counts.items()},
                "deliveries": {
                    status.value: count for status, count in self.deliveries.counts_by_status().items()
                },
                "recent_failures": failures[:RECENT_FAILURES],
                "waiting_studies": self.waiting_studies(),
            },
        )
