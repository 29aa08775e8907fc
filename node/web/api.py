"""Handlers of the /ai/ REST routes.

Each handler takes plain values (path parameters, query, body) and returns an
:class:`ApiResponse`; the Orthanc plugin only translates. Bad input gives 4xx with a message,
never a 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from node import __version__
from node.db.config_store import SubjectType
from node.db.errors import JobNotFoundError, JobStateError
from node.db.intake_problems import IntakeProblemStore
from node.db.jobs import WORKER_STATE_PREFIX, Job, JobTrigger
from node.db.models import JobStatus, WaitStatus
from node.delivery.queue import DeliveryStore
from node.errors import NodeError, NoMatchingSeriesError, OrthancError, PipelineError
from node.intake.handoff import Intake
from node.intake.plan import RoutingPlan, plan_jobs
from node.pipeline.registry import PipelineRegistry
from node.study.criteria import select_series
from node.study.summary import StudySummary
from node.web.http import ApiResponse
from node.web.http import error as _error
from node.web.params import MAX_PAGE, RequestError, page
from node.web.routes import Operation, Route

#: workers report every few seconds (node.worker.REPORT_EVERY); silent longer than this, gone
WORKER_SILENCE = timedelta(seconds=45)


def state_loaded(state: Mapping[str, Any]) -> list[str]:
    loaded = state.get("loaded")
    return list(loaded) if isinstance(loaded, list) else []


def job_audit_details(job: Mapping[str, Any]) -> dict[str, Any]:
    """What the audit trail keeps of a job: enough to find it again, no patient data."""
    return {key: job.get(key) for key in ("id", "study_instance_uid", "pipeline_name", "status")}


class NodeApi:
    def __init__(
        self,
        intake: Intake,
        extra_health: Callable[[], dict[str, Any]] = dict,
        deliveries: DeliveryStore | None = None,
    ) -> None:
        self.intake = intake
        self.store = intake.store
        self.deliveries = deliveries or DeliveryStore(intake.store.engine)
        self.intake_problems = IntakeProblemStore(intake.store.engine)
        self.registry = intake.registry
        self.extra_health = extra_health
        self._all_installed: PipelineRegistry | None = None

    def routes(self) -> list[Route]:
        return [
            Route(
                "/ai/health",
                (Operation("GET", lambda r: self.health(), "Node status, pipelines and job counts"),),
            ),
            Route(
                "/ai/pipelines", (Operation("GET", lambda r: self.pipelines(), "The installed pipelines"),)
            ),
            Route(
                "/ai/jobs",
                (
                    Operation(
                        "GET",
                        lambda r: self.jobs(r.query),
                        "Jobs, newest first",
                        query={
                            "status": "keep one status (queued, running, done, failed)",
                            "study": "keep one StudyInstanceUID",
                            "limit": f"page size, 1-{MAX_PAGE} (default 100)",
                            "offset": "jobs to skip",
                        },
                    ),
                ),
            ),
            Route("/ai/jobs/{job_id}", (Operation("GET", lambda r: self.job(r.groups[0]), "One job"),)),
            Route(
                "/ai/jobs/{job_id}/retry",
                (
                    Operation(
                        "POST",
                        lambda r: self.retry(r.groups[0], user=r.user),
                        "Queue a failed job again",
                        write=True,
                    ),
                ),
            ),
            Route(
                "/ai/studies/{study_id}/process",
                (
                    Operation(
                        "POST",
                        lambda r: self.process_study(r.groups[0], r.body, user=r.user),
                        "Run now: queue a pipeline (or every one that applies) on a study",
                        write=True,
                        request_schema={
                            "type": "object",
                            "properties": {"pipeline": {"type": "string"}},
                            "additionalProperties": False,
                        },
                    ),
                ),
            ),
        ]

    def studies_routes(self) -> list[Route]:
        return [
            Route(
                "/ai/studies/waiting",
                (
                    Operation(
                        "GET",
                        lambda r: self.waiting_studies(r.query),
                        "Studies waiting for the series a rule requires, and how past waits ended",
                        query={
                            "status": "waiting (default), queued, skipped, forced or all",
                            "limit": f"page size, 1-{MAX_PAGE} (default 100)",
                            "offset": "entries to skip",
                        },
                    ),
                ),
            ),
            Route(
                "/ai/studies/{study_id}/complete",
                (
                    Operation(
                        "POST",
                        lambda r: self.force_complete(r.groups[0], r.user),
                        "Force a study complete: run its matching rules without waiting for required series",
                        write=True,
                    ),
                ),
            ),
        ]

    def waiting_studies(self, query: Mapping[str, str]) -> ApiResponse:
        wanted = query.get("status", "waiting")
        status = None
        if wanted != "all":
            try:
                status = WaitStatus(wanted)
            except ValueError:
                allowed = ", ".join([*(s.value for s in WaitStatus), "all"])
                return _error(400, f"status {wanted!r} is not one of: {allowed}")
        try:
            limit, offset = page(query)
        except RequestError as problem:
            return _error(problem.status, problem.message)
        waits = self.intake.waits.list(status, limit=limit, offset=offset)
        return ApiResponse(200, [wait.to_json() for wait in waits])

    def force_complete(self, study_id: str, user: str) -> ApiResponse:
        try:
            jobs = self.intake.force_complete(study_id, actor=user)
        except OrthancError:
            return _error(404, f"Orthanc has no study {study_id}")
        return ApiResponse(200, [job.to_json() for job in jobs])

    def health(self) -> ApiResponse:
        """200 and ``ok``, or 503 and ``unhealthy`` with the ``problems`` in words, so that a
        monitoring system's plain HTTP check notices (the follower stopped or fell behind)."""
        extra = dict(self.extra_health())
        problems = list(extra.pop("problems", []))
        return ApiResponse(
            503 if problems else 200,
            {
                "status": "unhealthy" if problems else "ok",
                "problems": problems,
                "version": __version__,
                "pipelines": self.registry.names(),
                "jobs": self.store.counts_by_status(),
                "intake_problems": self.intake_problems.counts(),
                # full: new studies wait in Orthanc until workers make room (worker.max_queued_jobs)
                "queue": self.store.queue_room().to_json(),
                **extra,
            },
        )

    def pipelines(self) -> ApiResponse:
        """Each enabled pipeline, and which running workers hold it in memory (warm) or would
        load it for their next job (cold); then the installed pipelines the configuration
        leaves out (``pipelines:``), as not enabled."""
        workers = self._live_workers()
        described = []
        for name in self.registry.names():
            claiming = [
                w for w, state in workers.items() if state.get("claims") is None or name in state["claims"]
            ]
            warm = [w for w in claiming if name in state_loaded(workers[w])]
            described.append(
                {
                    **self.registry.describe(name),
                    "enabled": True,
                    "warm": bool(warm),
                    "workers": {"claiming": len(claiming), "warm": len(warm)},
                }
            )
        installed = self._installed()
        for name in installed.names():
            if name not in self.registry.names():
                described.append(
                    {
                        **installed.describe(name),
                        "enabled": False,
                        "warm": False,
                        "workers": {"claiming": 0, "warm": 0},
                    }
                )
        return ApiResponse(200, described)

    def _installed(self) -> PipelineRegistry:
        if self._all_installed is None:
            try:
                self._all_installed = PipelineRegistry.from_entry_points()
            except NodeError:  # a broken third-party entry point: show the enabled ones only
                self._all_installed = self.registry
        return self._all_installed

    def _live_workers(self) -> dict[str, dict[str, Any]]:
        now = datetime.now(UTC)
        live = {}
        for key, (value, updated_at) in self.store.states(WORKER_STATE_PREFIX).items():
            if now - updated_at > WORKER_SILENCE:
                continue  # a worker that stopped reporting is gone (stopped or killed)
            try:
                live[key.removeprefix(WORKER_STATE_PREFIX)] = json.loads(value)
            except ValueError:
                continue
        return live

    def jobs(self, query: Mapping[str, str]) -> ApiResponse:
        status = query.get("status")
        if status is not None:
            try:
                JobStatus(status)
            except ValueError:
                allowed = ", ".join(s.value for s in JobStatus)
                return _error(400, f"status {status!r} is not one of: {allowed}")
        try:
            limit, offset = page(query)
        except RequestError as problem:
            return _error(problem.status, problem.message)
        jobs = self.store.list(
            status=JobStatus(status) if status else None,
            study=query.get("study"),
            limit=limit,
            offset=offset,
        )
        return ApiResponse(200, [job.to_json() for job in jobs])

    def job(self, job_id: str) -> ApiResponse:
        """One job, with its deliveries."""
        try:
            job = self.store.get(int(job_id))
        except JobNotFoundError as error:
            return _error(404, str(error))
        deliveries = [delivery.to_json() for delivery in self.deliveries.for_job(job.id)]
        return ApiResponse(200, {**job.to_json(), "deliveries": deliveries})

    def retry(self, job_id: str, *, user: str = "anonymous") -> ApiResponse:
        """Queue a failed job again; recorded in the audit trail."""
        try:
            job = self.store.retry(int(job_id))
        except JobNotFoundError as error:
            return _error(404, str(error))
        except JobStateError as error:
            return _error(409, str(error))
        answer = job.to_json()
        self.intake.config.record_action(
            user, "retry", SubjectType.JOB, job_id, {"jobs": [job_audit_details(answer)]}
        )
        return ApiResponse(200, answer)

    def process_study(self, study_id: str, body: bytes, *, user: str = "anonymous") -> ApiResponse:
        """Run now: queue the named pipeline (or every one that applies), re-running if done."""
        try:
            request = json.loads(body) if body.strip() else {}
        except ValueError:
            return _error(400, 'the request body must be JSON, e.g. {"pipeline": "ct-tissue"}')
        if not isinstance(request, dict):
            return _error(400, "the request body must be a JSON object")
        try:
            study = self.intake.summarize(study_id)
        except NodeError:
            return _error(404, f"Orthanc has no study {study_id}")
        name = request.get("pipeline")
        try:
            pipelines = [self.registry.get(name)] if name else list(self.registry)
        except PipelineError as error:
            return _error(404, str(error))
        candidates = [series.summary for series in study.input_series()]
        routing = plan_jobs(study, self.intake.rules(), self.registry, ignore_requirements=True)
        jobs: list[Job] = []
        reasons = []
        for pipeline in pipelines:
            try:
                select_series(candidates, pipeline.accepts)
            except NoMatchingSeriesError as error:
                reasons.append(f"{pipeline.name}: {error}")
                continue
            try:
                jobs.append(self._queue_or_rerun(study, pipeline.name, pipeline.version, routing))
            except JobStateError as error:  # a run of it is queued or running already
                return _error(409, str(error))
        if not jobs:
            return _error(422, "no pipeline applies to this study. " + " ".join(reasons))
        self.intake.config.record_action(
            user,
            "process",
            SubjectType.JOB,
            study.study_instance_uid,
            {"orthanc_study_id": study_id, "pipeline": name, "jobs": [job.id for job in jobs]},
        )
        return ApiResponse(200, [job.to_json() for job in jobs])

    def _queue_or_rerun(self, study: StudySummary, name: str, version: str, routing: RoutingPlan) -> Job:
        # Run now sends the results where the rules would (this Orthanc when no rule asks for
        # the pipeline); the series is still the pipeline's own choice.
        planned = next((job for job in routing.jobs if job.pipeline.name == name), None)
        job = self.store.enqueue(
            orthanc_study_id=study.orthanc_id,
            study_instance_uid=study.study_instance_uid,
            pipeline_name=name,
            pipeline_version=version,
            trigger=JobTrigger.MANUAL,
            priority=0 if planned is None else planned.priority,
            destinations=None if planned is None else planned.destinations,
            rules=None if planned is None else planned.rules,
        )
        if job is not None:
            return job
        previous = [
            existing
            for existing in self.store.list(study=study.study_instance_uid, limit=MAX_PAGE)
            if existing.pipeline_name == name and existing.pipeline_version == version
        ]
        latest = max(previous, key=lambda existing: existing.id)
        return self.store.rerun(latest.id)
