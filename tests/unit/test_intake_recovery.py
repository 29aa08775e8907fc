"""One study that cannot be routed never holds up the others: it is set aside with the reason,
retried if the failure may pass, and an admin can retry it (node.intake.recovery)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from node.config import IntakeSettings
from node.db.database import create_engine_for, migrate
from node.db.errors import QueueFullError
from node.db.intake_problems import IntakeProblemStore
from node.db.jobs import JobStore, JobTrigger
from node.db.models import IntakeProblemStatus
from node.errors import OrthancError
from node.intake.changes import CURSOR_KEY, ChangeFollower
from node.intake.handoff import Intake
from node.intake.recovery import IntakeRecovery, classify
from node.pipeline.registry import PipelineRegistry
from node.study.summary import StudySummary
from tests.unit.api_node import ct_head_study
from tests.unit.job_db import Clock
from tests.unit.test_changes import NOW, FakeOrthanc, MemoryState

SETTINGS = IntakeSettings(max_attempts=3, base_delay=timedelta(seconds=10), max_delay=timedelta(minutes=1))


def _study(orthanc_id: str, uid: str) -> StudySummary:
    return dataclasses.replace(ct_head_study(), orthanc_id=orthanc_id, study_instance_uid=uid)


class Studies:
    """What Orthanc would summarise; a study can be missing (deleted) or Orthanc unreachable."""

    def __init__(self) -> None:
        self.known: dict[str, StudySummary] = {}
        self.unreachable = False

    def summarize(self, study_id: str) -> StudySummary:
        if self.unreachable:
            raise OrthancError("Orthanc at http://127.0.0.1:8042 did not answer GET /studies/x: refused")
        if study_id not in self.known:
            raise OrthancError(
                f"Orthanc could not answer GET /studies/{study_id}: Unknown resource", not_found=True
            )
        return self.known[study_id]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def parts(tmp_path: Path, clock: Clock):
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    migrate(url)
    engine = create_engine_for(url)
    jobs = JobStore(engine)
    studies = Studies()
    intake = Intake(jobs, PipelineRegistry.from_entry_points(), studies.summarize)
    intake.seed_default_rule()
    problems = IntakeProblemStore(engine, clock=clock)
    return jobs, studies, problems, IntakeRecovery(intake, problems, SETTINGS)


def _follow(recovery: IntakeRecovery, orthanc: FakeOrthanc, state: MemoryState) -> ChangeFollower:
    return ChangeFollower(orthanc.get_json, recovery.study_ready, state, stable_age=timedelta(seconds=10))


def test_a_study_deleted_before_routing_is_set_aside_and_the_next_one_is_routed(parts) -> None:
    jobs, studies, problems, recovery = parts
    studies.known["kept"] = _study("kept", "1.2.3.4")
    orthanc, state = FakeOrthanc(), MemoryState()
    follower = _follow(recovery, orthanc, state)
    orthanc.add("StableStudy", "deleted")
    orthanc.add("StableStudy", "kept")

    follower.poll()

    assert [job.study_instance_uid for job in jobs.list()] == ["1.2.3.4"]
    assert state.values[CURSOR_KEY] == "2"
    (problem,) = problems.list()
    assert (problem.orthanc_study_id, problem.status, problem.attempts, problem.next_attempt_at) == (
        "deleted",
        IntakeProblemStatus.FAILED,
        1,
        None,
    )
    assert problem.reason == "the study is no longer in Orthanc (deleted before it could be routed)"


def test_a_study_instance_uid_too_long_for_the_job_table_is_refused_in_words(parts) -> None:
    jobs, studies, problems, recovery = parts
    long_uid = "1.2.826.0.1.3680043.8.498." + "1234567890." * 5 + "1"
    studies.known["long"] = _study("long", long_uid)
    studies.known["fine"] = _study("fine", "1.2.3.5")

    recovery.study_ready("long", JobTrigger.STABLE_STUDY)
    recovery.study_ready("fine", JobTrigger.STABLE_STUDY)

    assert [job.study_instance_uid for job in jobs.list()] == ["1.2.3.5"]
    (problem,) = problems.list(IntakeProblemStatus.FAILED)
    assert problem.study_instance_uid == long_uid
    assert problem.reason == (
        f"the study's Study Instance UID is {len(long_uid)} characters long ({long_uid[:77]}...); "
        "DICOM allows at most 64; the node cannot record jobs for it"
    )


def test_a_transient_failure_is_retried_with_backoff_until_it_works(parts, clock: Clock) -> None:
    jobs, studies, problems, recovery = parts
    studies.known["s1"] = _study("s1", "1.2.3.6")
    studies.unreachable = True

    problem = recovery.study_ready("s1", JobTrigger.STABLE_STUDY)

    assert problem is not None and problem.status is IntakeProblemStatus.RETRYING
    assert problem.next_attempt_at == clock.now + timedelta(seconds=10)
    assert "Orthanc could not be asked about the study" in problem.reason
    assert recovery.retry_due() == 0  # not due yet
    studies.unreachable = False
    clock.advance(10)
    assert recovery.retry_due() == 1
    assert [job.study_instance_uid for job in jobs.list()] == ["1.2.3.6"]
    assert problems.list() == []


def test_a_transient_failure_out_of_attempts_is_set_aside_until_a_retry(parts, clock: Clock) -> None:
    jobs, studies, problems, recovery = parts
    studies.known["s1"] = _study("s1", "1.2.3.7")
    studies.unreachable = True
    recovery.study_ready("s1", JobTrigger.REPLAY)
    for delay in (10, 20):
        clock.advance(delay)
        recovery.retry_due()
    (problem,) = problems.list()
    assert (problem.status, problem.attempts, problem.trigger) == (IntakeProblemStatus.FAILED, 3, "replay")
    clock.advance(3600)
    assert recovery.retry_due() == 0

    studies.unreachable = False
    retried = problems.retry(problem.id)
    assert retried is not None and (retried.status, retried.attempts) == (IntakeProblemStatus.RETRYING, 0)
    assert recovery.retry_due() == 1
    assert [(job.study_instance_uid, job.trigger) for job in jobs.list()] == [("1.2.3.7", JobTrigger.REPLAY)]
    assert problems.counts() == {"retrying": 0, "failed": 0}


def test_a_study_routed_later_by_its_next_stable_event_clears_its_problem(parts) -> None:
    jobs, studies, problems, recovery = parts
    recovery.study_ready("s1", JobTrigger.STABLE_STUDY)  # not in Orthanc yet, as far as we know
    assert problems.counts() == {"retrying": 0, "failed": 1}
    studies.known["s1"] = _study("s1", "1.2.3.8")
    recovery.study_ready("s1", JobTrigger.STABLE_STUDY)
    assert problems.counts() == {"retrying": 0, "failed": 0}
    assert len(jobs.list()) == 1


@pytest.mark.parametrize(
    ("error", "lasting", "reason"),
    [
        (OperationalError("INSERT ...", {}, Exception("database is locked")), False, "busy or unreachable"),
        (
            DataError("INSERT ...", {}, Exception("value too long for type character varying(64)")),
            True,
            "refused",
        ),
        (IntegrityError("INSERT ...", {}, Exception("NOT NULL constraint failed")), True, "refused"),
        (ValueError("study_instance_uid '1.2' is 90 characters; at most 64 fit"), True, "refuses"),
        (KeyError("MainDicomTags"), False, "internal error in the node"),
    ],
)
def test_failures_are_told_apart(error: Exception, lasting: bool, reason: str) -> None:
    failure = classify(error)
    assert failure.lasting is lasting
    assert reason in failure.reason
    assert "INSERT" not in failure.reason  # the statement (and its values) stay out of the words


def test_the_follower_s_lag_counts_changes_and_the_age_of_the_oldest_unread() -> None:
    orthanc, state = FakeOrthanc(), MemoryState()
    follower = ChangeFollower(
        orthanc.get_json, lambda *_: None, state, stable_age=timedelta(seconds=10), now=lambda: NOW
    )
    assert follower.lag().to_json() == {"changes_behind": 0, "oldest_unhandled_age_seconds": None}
    orthanc.add("NewStudy", "s1")
    orthanc.add("StableStudy", "s1")
    for change, date in zip(orthanc.changes, ("20261128T115500", "20261128T115900"), strict=True):
        change["Date"] = date
    assert follower.lag().to_json() == {"changes_behind": 2, "oldest_unhandled_age_seconds": 300.0}
    follower.poll()
    assert follower.lag().changes_behind == 0


def test_a_full_queue_defers_the_next_study_without_setting_it_aside(tmp_path: Path, clock: Clock) -> None:
    url = f"sqlite:///{tmp_path / 'capped.sqlite'}"
    migrate(url)
    engine = create_engine_for(url)
    jobs = JobStore(engine, max_queued_jobs=1)
    studies = Studies()
    intake = Intake(jobs, PipelineRegistry.from_entry_points(), studies.summarize)
    intake.seed_default_rule()
    problems = IntakeProblemStore(engine, clock=clock)
    recovery = IntakeRecovery(intake, problems, SETTINGS)
    studies.known["first"] = _study("first", "1.2.3.10")
    studies.known["second"] = _study("second", "1.2.3.11")
    orthanc, state = FakeOrthanc(), MemoryState()
    follower = _follow(recovery, orthanc, state)
    orthanc.add("StableStudy", "first")
    orthanc.add("StableStudy", "second")

    with pytest.raises(
        QueueFullError, match=r"the job queue is full \(1 queued, worker.max_queued_jobs is 1\)"
    ):
        follower.poll()

    assert [job.study_instance_uid for job in jobs.list()] == ["1.2.3.10"]
    assert state.values[CURSOR_KEY] == "1"  # the second study's change is read again later
    assert problems.list() == []
    (job,) = jobs.list()
    jobs.cancel(job.id, actor="test")  # room again
    follower.poll()
    assert sorted(job.study_instance_uid for job in jobs.list()) == ["1.2.3.10", "1.2.3.11"]
