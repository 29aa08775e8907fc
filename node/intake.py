"""From "this study is stable" to queued jobs: summarise, route, enqueue. Runs in the plugin."""

from __future__ import annotations

import logging
from collections.abc import Callable

from node.jobs.store import Job, JobStore
from node.routing import StudySummary, route
from pipelines.registry import PipelineRegistry

log = logging.getLogger(__name__)


class Intake:
    def __init__(
        self,
        store: JobStore,
        registry: PipelineRegistry,
        summarize: Callable[[str], StudySummary],
    ) -> None:
        self.store = store
        self.registry = registry
        self.summarize = summarize

    def study_ready(self, study_id: str, trigger: str) -> list[Job]:
        """Queue one job per pipeline that applies; jobs that exist already are not queued again."""
        study = self.summarize(study_id)
        queued = []
        for decision in route(study, self.registry):
            job = self.store.enqueue(
                orthanc_study_id=study.orthanc_id,
                study_instance_uid=study.study_instance_uid,
                pipeline_name=decision.pipeline.name,
                pipeline_version=decision.pipeline.version,
                trigger=trigger,
            )
            if job is not None:
                queued.append(job)
        log.info(
            "routed study %s (%s): %s",
            study.study_instance_uid,
            trigger,
            ", ".join(f"job {job.id} {job.pipeline_name}" for job in queued) or "no new job",
        )
        return queued
