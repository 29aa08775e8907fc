"""A study that becomes stable again with more instances in the series its job already ran on
(a transfer cut off, then completed): no second job, and the admin is told what to do."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import Engine

from node.db.config_store import ConfigStore
from node.db.jobs import JobStore, JobTrigger
from node.db.waits import StudyWaitStore
from node.intake.handoff import Intake
from tests.unit.job_db import Clock
from tests.unit.test_routing_rules import REGISTRY, series, study


@pytest.fixture
def intake(engine: Engine, clock: Clock) -> Intake:
    intake = Intake(
        JobStore(engine),
        REGISTRY,
        {"study-1": study(series("ct", "CT", 12))}.__getitem__,
        config=ConfigStore(engine, clock=clock),
        waits=StudyWaitStore(engine, clock=clock),
    )
    intake.seed_default_rule()
    return intake


def run_job(intake: Intake, instances_read: int) -> int:
    (job,) = intake.study_ready("study-1", JobTrigger.STABLE_STUDY)
    claimed = intake.store.claim(worker_id="w", lease_seconds=60)
    assert claimed is not None and claimed.id == job.id
    result = {"source_series_instance_uid": "ct", "source_instances": instances_read}
    intake.store.complete(job.id, "w", result=result, stage_timings={})
    return job.id


def test_more_instances_after_the_job_queue_nothing_and_warn_with_the_remedy(intake: Intake, caplog) -> None:
    job_id = run_job(intake, instances_read=12)
    intake.summarize = {"study-1": study(series("ct", "CT", 20))}.__getitem__

    with caplog.at_level(logging.WARNING, logger="node.intake.handoff"):
        queued = intake.study_ready("study-1", JobTrigger.STABLE_STUDY)

    assert queued == []
    assert len(intake.store.list(study="1.2.3")) == 1
    assert (
        f"series ct has 20 instances now, but job {job_id} (ct-tissue) ran on the 12 that had arrived"
        in caplog.text
    )
    assert "run the study again (Run now)" in caplog.text


def test_the_same_study_stable_again_warns_of_nothing(intake: Intake, caplog) -> None:
    run_job(intake, instances_read=12)

    with caplog.at_level(logging.WARNING, logger="node.intake.handoff"):
        queued = intake.study_ready("study-1", JobTrigger.STABLE_STUDY)

    assert queued == []
    assert caplog.text == ""
