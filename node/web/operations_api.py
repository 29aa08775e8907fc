"""/ai/deliveries, /ai/audit and cancelling a job.

Every manual action — retrying a delivery or a job, cancelling a job — is recorded in the audit
trail with who did it, so "why did this study go out twice?" has an answer.
"""

from __future__ import annotations

from node.db.config_store import ConfigStore, SubjectType
from node.db.errors import DeliveryNotFoundError, DeliveryStateError, JobNotFoundError, JobStateError
from node.db.jobs import JobStore
from node.db.models import DeliveryStatus
from node.delivery.queue import DeliveryStore
from node.web.api import job_audit_details
from node.web.http import ApiResponse, Request
from node.web.params import RequestError, answers, listing_query, page, path_id
from node.web.routes import Operation, Route


class OperationsApi:
    def __init__(self, jobs: JobStore, deliveries: DeliveryStore, config: ConfigStore) -> None:
        self.jobs = jobs
        self.deliveries = deliveries
        self.config = config

    def routes(self) -> list[Route]:
        return [
            Route(
                "/ai/deliveries",
                (
                    Operation(
                        "GET",
                        answers(self.list_deliveries),
                        "Deliveries of results to destinations, newest first",
                        query=listing_query(DeliveryStatus, "deliveries"),
                    ),
                ),
            ),
            Route(
                "/ai/deliveries/{delivery_id}/retry",
                (
                    Operation(
                        "POST",
                        answers(self.retry_delivery),
                        "Send a failed delivery again (its attempts start from 0)",
                        write=True,
                    ),
                ),
            ),
            Route(
                "/ai/jobs/{job_id}/cancel",
                (Operation("POST", answers(self.cancel_job), "Cancel a queued job", write=True),),
            ),
            Route(
                "/ai/audit",
                (
                    Operation(
                        "GET",
                        answers(self.audit),
                        "Changes and manual actions, newest first (secrets masked)",
                        query={"limit": "page size, 1-1000 (default 100)", "offset": "entries to skip"},
                    ),
                ),
            ),
        ]

    # -- routes -----------------------------------------------------------------------------

    def list_deliveries(self, request: Request) -> ApiResponse:
        limit, offset = page(request.query)
        try:
            found = self.deliveries.list(request.query.get("status"), limit=limit, offset=offset)
        except ValueError as error:
            raise RequestError(400, str(error)) from error
        return ApiResponse(200, [delivery.to_json() for delivery in found])

    def retry_delivery(self, request: Request) -> ApiResponse:
        delivery_id = path_id(request.groups[0], "delivery")
        try:
            delivery = self.deliveries.retry(delivery_id)
        except DeliveryNotFoundError as error:
            raise RequestError(404, str(error)) from error
        except DeliveryStateError as error:
            raise RequestError(409, str(error)) from error
        self.config.record_action(
            request.user,
            "retry",
            SubjectType.DELIVERY,
            str(delivery_id),
            {"job_id": delivery.job_id, "destination": delivery.destination},
        )
        return ApiResponse(200, delivery.to_json())

    def cancel_job(self, request: Request) -> ApiResponse:
        job_id = path_id(request.groups[0], "job")
        try:
            job = self.jobs.cancel(job_id, actor=request.user)
        except JobNotFoundError as error:
            raise RequestError(404, str(error)) from error
        except JobStateError as error:
            raise RequestError(409, str(error)) from error
        self.config.record_action(
            request.user, "cancel", SubjectType.JOB, str(job_id), job_audit_details(job.to_json())
        )
        return ApiResponse(200, job.to_json())

    def audit(self, request: Request) -> ApiResponse:
        limit, offset = page(request.query)
        return ApiResponse(200, [entry.to_json() for entry in self.config.audit(limit=limit, offset=offset)])
