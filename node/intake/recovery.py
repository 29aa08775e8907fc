"""Routing a study without letting it hold up the others.

The change follower hands every stable study to :meth:`IntakeRecovery.study_ready`, which
never raises for a problem of the study itself: a study whose summary or routing fails is
recorded in :mod:`node.db.intake_problems` with the reason in words, and the follower moves
on. A failure that trying again may cure (Orthanc restarting, the database busy) is retried
with backoff up to ``intake.max_attempts``; a lasting one (the study was deleted, a UID the
job table refuses) is set aside at once and waits for an admin's Retry.

Only a failure to *record* the problem (the job database itself unreachable) propagates: then
nothing can be routed anyway, and the follower keeps its cursor and tries again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from node.config import IntakeSettings
from node.db.intake_problems import IntakeProblem, IntakeProblemStore
from node.db.jobs import JobTrigger
from node.db.models import IntakeProblemStatus
from node.errors import NodeError, OrthancError
from node.intake.handoff import Intake
from node.study.summary import StudySummary
from node.support.failpoints import failpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntakeFailure:
    #: what went wrong, in words a PACS admin can act on
    reason: str
    #: trying again will not help (until someone changes something)
    lasting: bool
    #: a fault of the node's own, whose traceback belongs in the log
    internal: bool = False


def classify(error: Exception) -> IntakeFailure:
    """Whether a failure to route a study is lasting or may pass, and why, in words."""
    if isinstance(error, OrthancError):
        if error.not_found:
            return IntakeFailure(
                "the study is no longer in Orthanc (deleted before it could be routed)", True
            )
        return IntakeFailure(f"Orthanc could not be asked about the study: {error}", False)
    if isinstance(error, OperationalError):
        # locked (SQLite), a lost connection (PostgreSQL): the statement itself was fine
        return IntakeFailure(f"the job database was busy or unreachable: {_first_line(error.orig)}", False)
    if isinstance(error, DataError | IntegrityError):
        return IntakeFailure(f"the job database refused the study's values: {_first_line(error.orig)}", True)
    if isinstance(error, NodeError):
        return IntakeFailure(str(error), True)
    if isinstance(error, ValueError):
        # the stores' own checks (a value longer than its column) say which value
        return IntakeFailure(f"the job table refuses the study: {error}", True)
    # Anything else is a fault of the node's; it may pass (or a Retry after an upgrade cures it)
    return IntakeFailure(
        f"internal error in the node while routing the study ({type(error).__name__}: {error})",
        lasting=False,
        internal=True,
    )


def _first_line(error: object) -> str:
    # A driver's message may continue with the SQL statement; the first line says what failed.
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class IntakeRecovery:
    def __init__(self, intake: Intake, problems: IntakeProblemStore, settings: IntakeSettings) -> None:
        self.intake = intake
        self.problems = problems
        self.settings = settings

    def study_ready(self, study_id: str, trigger: JobTrigger) -> IntakeProblem | None:
        """Route the study; on failure record why and return the problem instead of raising.

        Raises :class:`~node.db.errors.QueueFullError` while the queue holds
        ``worker.max_queued_jobs`` jobs: not a problem of the study, which waits in Orthanc (the
        follower keeps its cursor) and is routed in order once workers make room."""
        self.intake.store.queue_room().require()
        study: StudySummary | None = None
        failpoint("route")
        try:
            study = self.intake.summarize(study_id)
            self.intake.route(study, trigger)
        except Exception as error:  # noqa: BLE001 - every failure of one study is recorded, none stops intake
            return self._set_aside(study_id, study, trigger, error)
        resolved = self.problems.resolve(study_id)
        if resolved is not None:
            log.info(
                "study %s routed after %d failed attempt(s)",
                study.study_instance_uid,
                resolved.attempts,
                extra={"action": "route", "study_instance_uid": study.study_instance_uid},
            )
        return None

    def retry_due(self) -> int:
        """Try again the studies whose backoff is over (and those an admin retried); how many."""
        due = self.problems.due()
        for problem in due:
            self.study_ready(problem.orthanc_study_id, JobTrigger(problem.trigger))
        return len(due)

    def _set_aside(
        self, study_id: str, study: StudySummary | None, trigger: JobTrigger, error: Exception
    ) -> IntakeProblem:
        failure = classify(error)
        uid = None if study is None else study.study_instance_uid
        problem = self.problems.record(
            orthanc_study_id=study_id,
            study_instance_uid=uid,
            trigger=trigger.value,
            reason=failure.reason,
            lasting=failure.lasting,
            schedule=self.settings,
        )
        who = f"study {uid}" if uid else f"Orthanc study {study_id}"
        extra = {"action": "route", "study_instance_uid": uid, "orthanc_study_id": study_id}
        if problem.status is IntakeProblemStatus.RETRYING and problem.next_attempt_at is not None:
            log.warning(
                "%s could not be routed (attempt %d of %d): %s; trying again at %s, later studies go on",
                who,
                problem.attempts,
                self.settings.max_attempts,
                failure.reason,
                problem.next_attempt_at.isoformat(timespec="seconds"),
                extra=extra,
                exc_info=failure.internal,
            )
        else:
            log.error(
                "%s could not be routed and is set aside: %s. Later studies go on; "
                "Retry it in the console or with POST /ai/intake/problems/%d/retry",
                who,
                failure.reason,
                problem.id,
                extra=extra,
                exc_info=failure.internal,
            )
        return problem
