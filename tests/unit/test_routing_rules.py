"""Routing through stored rules: the plan (series per rule, merged jobs, priorities) and the
intake's waits for required series, over a real SQLite job database and the built-in pipelines."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.uid import CTImageStorage, MRImageStorage
from sqlalchemy import Engine

from node.db.config_store import ConfigStore
from node.db.jobs import JobStore, JobTrigger
from node.db.models import WaitStatus
from node.db.waits import StudyWaitStore
from node.errors import OrthancError
from node.intake.handoff import DEFAULT_RULE_NAME, Intake
from node.intake.plan import plan_jobs
from node.pipeline.registry import PipelineRegistry
from node.rules.model import Rule
from node.study.series import SeriesSummary
from node.study.summary import StudySeries, StudySummary
from tests.unit.job_db import Clock

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
REGISTRY = PipelineRegistry.from_entry_points()


def series(uid: str, modality: str, count: int, **attributes: Any) -> StudySeries:
    summary = SeriesSummary(
        series_instance_uid=uid,
        modality=modality,
        instance_count=count,
        image_orientation=AXIAL,
        sop_class_uid={"CT": CTImageStorage, "MR": MRImageStorage}[modality],
    )
    return StudySeries(f"orthanc-{uid}", summary, "Siemens", {"Modality": modality, **attributes})


def study(*members: StudySeries) -> StudySummary:
    return StudySummary("study-1", "1.2.3", members, {"StudyDescription": "HEAD"})


def rule(name: str, condition: str, pipelines: list[str], **fields: Any) -> Rule:
    return Rule(name=name, condition=condition, pipelines=pipelines, **fields)


HEAD = study(
    series("thin", "CT", 200, SliceThickness=1.0, SeriesDescription="HEAD 1mm"),
    series("thick", "CT", 300, SliceThickness=5.0, SeriesDescription="HEAD 5mm"),
)


def test_a_series_rule_runs_its_pipeline_on_the_series_it_selects_not_the_largest() -> None:
    plan = plan_jobs(HEAD, [rule("thin-ct", "SliceThickness <= 3.0", ["ct-tissue"])], REGISTRY)
    (job,) = plan.jobs
    assert (job.pipeline.name, job.series.summary.series_instance_uid) == ("ct-tissue", "thin")


def test_a_study_rule_lets_the_pipeline_take_the_largest_series_it_accepts() -> None:
    plan = plan_jobs(
        HEAD, [rule("head", 'StudyDescription == "HEAD"', ["ct-tissue"], level="study")], REGISTRY
    )
    assert [job.series.summary.series_instance_uid for job in plan.jobs] == ["thick"]


def test_two_rules_for_one_pipeline_make_one_job_with_every_destination_and_the_higher_priority() -> None:
    rules = [
        rule("routine", 'Modality == "CT"', ["ct-tissue"], destinations=["this-orthanc"]),
        rule("urgent", "SliceThickness <= 3.0", ["ct-tissue"], destinations=["pacs"], priority="urgent"),
    ]
    (job,) = plan_jobs(HEAD, rules, REGISTRY).jobs
    # urgent rules first: their series choice wins
    assert job.rules == ("urgent", "routine")
    assert job.destinations == ("pacs", "this-orthanc")
    assert job.priority == 100
    assert job.series.summary.series_instance_uid == "thin"


def test_disabled_rules_and_missing_pipelines_queue_nothing_and_say_why() -> None:
    plan = plan_jobs(
        HEAD,
        [rule("off", "true", ["ct-tissue"], enabled=False), rule("ghost", "true", ["not-installed"])],
        REGISTRY,
    )
    assert plan.jobs == ()
    assert plan.problems == (
        "rule 'ghost' names pipeline 'not-installed', which is not installed or not enabled",
    )


def test_a_pipeline_that_accepts_none_of_the_selected_series_gets_no_job() -> None:
    plan = plan_jobs(HEAD, [rule("ct-to-brain", 'Modality == "CT"', ["brain-extraction"])], REGISTRY)
    assert plan.jobs == ()
    assert "none of the 2 series rule 'ct-to-brain' selects" in str(
        plan.choices[("ct-to-brain", "brain-extraction")]
    )


# -- the intake: seeded rule, waits --------------------------------------------------------------


@pytest.fixture
def intake(engine: Engine, clock: Clock) -> Intake:
    studies = {"study-1": HEAD}
    store = JobStore(engine)
    return Intake(
        store,
        REGISTRY,
        studies.__getitem__,
        config=ConfigStore(engine, clock=clock),
        waits=StudyWaitStore(engine, clock=clock),
    )


def save(intake: Intake, new_rule: Rule) -> None:
    intake.config.save_rule(new_rule.model_dump(mode="json"), actor="test")


def test_the_first_start_seeds_one_rule_once(intake: Intake) -> None:
    intake.seed_default_rule()
    (seeded,) = intake.rules()
    assert (seeded.name, seeded.condition, seeded.pipelines) == (DEFAULT_RULE_NAME, "true", REGISTRY.names())
    intake.config.delete_rule(DEFAULT_RULE_NAME, actor="admin")
    intake.seed_default_rule()
    assert intake.rules() == []  # an admin's deletion stands


def test_a_stored_rule_beyond_the_condition_limits_is_left_out_of_routing(
    intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    # saved by an older node, whose rules could allocate without limit
    unbounded = {"name": "old", "condition": "7 in $range(1e10)", "pipelines": ["ct-tissue"]}
    intake.config.save_rule(unbounded, actor="test")
    save(intake, rule("ct", 'Modality == "CT"', ["ct-tissue"]))
    assert [stored.name for stored in intake.rules()] == ["ct"]
    assert "('old'), field 'condition'" in caplog.text and "$range is not allowed" in caplog.text


def needs_mr(wait_minutes: float, on_timeout: str) -> Rule:
    return rule(
        "needs-mr",
        'Modality == "CT"',
        ["ct-tissue"],
        requires={
            "series": [{"name": "MR", "condition": 'Modality == "MR"'}],
            "wait_minutes": wait_minutes,
            "on_timeout": on_timeout,
        },
    )


def test_an_incomplete_study_waits_then_is_skipped_with_the_reason(intake: Intake, clock: Clock) -> None:
    save(intake, needs_mr(10, "skip"))
    assert intake.study_ready("study-1", JobTrigger.STABLE_STUDY) == []
    (wait,) = intake.waits.list(WaitStatus.WAITING)
    assert wait.missing == ("MR",)
    assert intake.check_waits() == []  # not yet due
    clock.advance(11 * 60)
    assert intake.check_waits() == []
    ended = intake.waits.get("study-1", "needs-mr")
    assert ended is not None and ended.status is WaitStatus.SKIPPED
    assert ended.reason == "skipped: MR did not arrive within 10 min of the study becoming stable"


def test_an_incomplete_study_is_processed_when_the_rule_says_so(intake: Intake, clock: Clock) -> None:
    save(intake, needs_mr(10, "process"))
    intake.study_ready("study-1", JobTrigger.STABLE_STUDY)
    clock.advance(11 * 60)
    (job,) = intake.check_waits()
    assert (job.pipeline_name, job.trigger.value, job.rules) == ("ct-tissue", "wait-timeout", ("needs-mr",))
    assert intake.check_waits() == []  # the wait ended once


def test_the_required_series_arriving_ends_the_wait(intake: Intake) -> None:
    save(intake, needs_mr(10, "skip"))
    intake.study_ready("study-1", JobTrigger.STABLE_STUDY)
    intake.summarize = {"study-1": study(*HEAD.series, series("mr", "MR", 100))}.__getitem__
    (job,) = intake.study_ready("study-1", JobTrigger.STABLE_STUDY)
    assert job.pipeline_name == "ct-tissue"
    ended = intake.waits.get("study-1", "needs-mr")
    assert ended is not None and ended.status is WaitStatus.QUEUED


def test_forcing_a_study_complete_queues_its_rules_and_is_audited(intake: Intake) -> None:
    save(intake, needs_mr(600, "skip"))
    intake.study_ready("study-1", JobTrigger.STABLE_STUDY)
    (job,) = intake.force_complete("study-1", actor="admin")
    assert job.trigger.value == "forced"
    ended = intake.waits.get("study-1", "needs-mr")
    assert ended is not None and (ended.status, ended.reason) == (
        WaitStatus.FORCED,
        "forced complete by admin",
    )
    entry = intake.config.audit()[0]
    assert (entry.actor, entry.action, entry.subject_name) == ("admin", "force-complete", "1.2.3")


def test_urgent_jobs_are_claimed_before_routine_ones(intake: Intake) -> None:
    save(intake, rule("routine-ct", 'Modality == "CT"', ["ct-tissue"]))
    intake.study_ready("study-1", JobTrigger.STABLE_STUDY)
    intake.summarize = {"study-2": StudySummary("study-2", "9.9", HEAD.series)}.__getitem__
    save(intake, rule("routine-ct", 'Modality == "CT"', ["ct-tissue"], priority="urgent"))
    (urgent,) = intake.study_ready("study-2", JobTrigger.STABLE_STUDY)
    claimed = intake.store.claim(worker_id="w", lease_seconds=60)
    assert claimed is not None and claimed.id == urgent.id


def test_a_rule_completed_later_adds_its_destinations_to_the_queued_job(intake: Intake) -> None:
    save(intake, rule("all-ct", 'Modality == "CT"', ["ct-tissue"]))
    waiting = needs_mr(10, "skip").model_dump(mode="json") | {"destinations": ["pacs"]}
    intake.config.save_rule(waiting, actor="test")
    (job,) = intake.study_ready("study-1", JobTrigger.STABLE_STUDY)
    assert job.destinations == ("this-orthanc",)
    intake.summarize = {"study-1": study(*HEAD.series, series("mr", "MR", 100))}.__getitem__
    assert intake.study_ready("study-1", JobTrigger.STABLE_STUDY) == []  # the job exists already...
    merged = intake.store.get(job.id)
    assert merged.destinations == ("this-orthanc", "pacs")  # ...and now also goes to the PACS
    assert merged.rules == ("all-ct", "needs-mr")


def test_a_study_orthanc_cannot_summarise_stays_waiting(intake: Intake, clock: Clock) -> None:
    save(intake, needs_mr(10, "process"))
    intake.study_ready("study-1", JobTrigger.STABLE_STUDY)
    clock.advance(11 * 60)

    def unavailable(study_id: str) -> StudySummary:
        raise OrthancError(f"Orthanc did not answer GET /studies/{study_id}")

    intake.summarize = unavailable
    assert intake.check_waits() == []
    wait = intake.waits.get("study-1", "needs-mr")
    assert wait is not None and wait.status is WaitStatus.WAITING
