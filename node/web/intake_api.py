"""/ai/intake/problems: the studies routing set aside, and their Retry.

A study the change follower could not route (deleted before it was reached, a UID the job
table refuses, Orthanc or the database busy for longer than the retries) is listed here with
the reason; Retry makes it due at once, and the follower routes it within a second. Retries
are audited.
"""

from __future__ import annotations

from node.db.config_store import ConfigStore, SubjectType
from node.db.intake_problems import IntakeProblemStore
from node.db.models import IntakeProblemStatus
from node.web.http import ApiResponse, Request
from node.web.params import RequestError, answers, listing_query, page, path_id
from node.web.routes import Operation, Route

PROBLEM_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "orthanc_study_id": {"type": "string"},
        "study_instance_uid": {"type": ["string", "null"]},
        "trigger": {"type": "string"},
        "status": {"type": "string", "enum": [status.value for status in IntakeProblemStatus]},
        "reason": {"type": "string"},
        "attempts": {"type": "integer"},
        "first_failed_at": {"type": "string"},
        "last_failed_at": {"type": "string"},
        "next_attempt_at": {"type": ["string", "null"]},
    },
}


class IntakeApi:
    def __init__(self, problems: IntakeProblemStore, config: ConfigStore) -> None:
        self.problems = problems
        self.config = config

    def routes(self) -> list[Route]:
        return [
            Route(
                "/ai/intake/problems",
                (
                    Operation(
                        "GET",
                        answers(self.list),
                        "Studies routing set aside (retrying, or failed until a Retry), latest first",
                        query=listing_query(IntakeProblemStatus, "problems"),
                        response_schema={"type": "array", "items": PROBLEM_SCHEMA},
                    ),
                ),
            ),
            Route(
                "/ai/intake/problems/{problem_id}/retry",
                (
                    Operation(
                        "POST",
                        answers(self.retry),
                        "Route a study that was set aside again, now (its attempts start from 0)",
                        write=True,
                        response_schema=PROBLEM_SCHEMA,
                    ),
                ),
            ),
        ]

    def list(self, request: Request) -> ApiResponse:
        limit, offset = page(request.query)
        status = request.query.get("status")
        try:
            wanted = None if status is None else IntakeProblemStatus(status)
        except ValueError as error:
            known = ", ".join(s.value for s in IntakeProblemStatus)
            raise RequestError(400, f"status {status!r} is not one of {known}") from error
        found = self.problems.list(wanted, limit=limit, offset=offset)
        return ApiResponse(200, [problem.to_json() for problem in found])

    def retry(self, request: Request) -> ApiResponse:
        problem_id = path_id(request.groups[0], "problem")
        problem = self.problems.retry(problem_id)
        if problem is None:
            raise RequestError(404, f"there is no study set aside with id {problem_id} (routed since?)")
        self.config.record_action(
            request.user,
            "retry",
            SubjectType.STUDY,
            problem.study_instance_uid or problem.orthanc_study_id,
            {"orthanc_study_id": problem.orthanc_study_id, "reason": problem.reason},
        )
        return ApiResponse(200, problem.to_json())
