"""From "this study is stable" to queued jobs: summarise, apply the routing rules, enqueue.
Runs in the plugin, on the change follower's thread.

The rules are read from the job database on every study, so an edit in the console applies to
the next study without a restart. The loop guard comes first (the node's own output is never a
rule's input: :meth:`node.study.summary.StudySummary.rule_view`). A rule that requires series the
study lacks parks the study in :mod:`node.db.waits` until they arrive, its wait ends, or an
admin forces the study complete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from node import THIS_ORTHANC
from node.db.config_store import ConfigStore, SubjectType
from node.db.errors import QueueFullError
from node.db.jobs import Job, JobStore, JobTrigger
from node.db.models import JobStatus, WaitStatus
from node.db.waits import StudyWait, StudyWaitStore
from node.errors import InputStudyError, OrthancError
from node.intake.plan import PlannedJob, RoutingPlan, plan_jobs
from node.pipeline.registry import PipelineRegistry
from node.rules.files import rules_from_documents
from node.rules.model import OnTimeout, Rule
from node.study.summary import StudySummary
from node.study.uids import uid_problem

log = logging.getLogger(__name__)

#: the rule a new node starts with, so that it does what it did before rules existed
DEFAULT_RULE_NAME = "all-pipelines"
SEEDED_KEY = "rules.seeded"


class Intake:
    def __init__(
        self,
        store: JobStore,
        registry: PipelineRegistry,
        summarize: Callable[[str], StudySummary],
        *,
        config: ConfigStore | None = None,
        waits: StudyWaitStore | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.summarize = summarize
        self.config = config or ConfigStore(store.engine)
        self.waits = waits or StudyWaitStore(store.engine)

    # -- rules --------------------------------------------------------------------------------

    def rules(self) -> list[Rule]:
        """The stored rules (a stored rule that no longer validates is logged and left out)."""
        rules, problems = rules_from_documents(stored.document for stored in self.config.list_rules())
        for problem in problems:
            log.error("routing rule ignored: %s", problem)
        return rules

    def seed_default_rule(self) -> None:
        """On a node's first start: one rule running every installed pipeline on the series it
        accepts, results into this Orthanc. Recorded in the audit trail; edit or disable it in
        the console. Never seeded again, even after it is deleted."""
        if self.store.get_state(SEEDED_KEY) is not None:
            return
        if not self.config.list_rules() and self.registry.names():
            rule = Rule(
                name=DEFAULT_RULE_NAME,
                condition="true",
                pipelines=self.registry.names(),
                destinations=[THIS_ORTHANC],
            )
            self.config.save_rule(rule.model_dump(mode="json"), actor="ai-node (first start)")
            log.info("first start: added rule %r (every pipeline, results into this Orthanc)", rule.name)
        self.store.set_state(SEEDED_KEY, "1")

    # -- studies ------------------------------------------------------------------------------

    def study_ready(self, study_id: str, trigger: JobTrigger) -> list[Job]:
        """Queue the jobs the rules ask for; jobs that exist already are not queued again."""
        return self.route(self.summarize(study_id), trigger)

    def route(self, study: StudySummary, trigger: JobTrigger) -> list[Job]:
        """:meth:`study_ready` for a study already summarised."""
        problem = uid_problem(study.study_instance_uid)
        if problem:
            raise InputStudyError(
                f"the study's Study Instance UID {problem}; the node cannot record jobs for it"
            )
        plan = plan_jobs(study, self.rules(), self.registry)
        for wait in plan.incomplete:
            requires = wait.rule.requires
            if requires is None:  # plan_jobs lists only rules that require series here
                continue
            stored = self.waits.wait(
                orthanc_study_id=study.orthanc_id,
                study_instance_uid=study.study_instance_uid,
                rule=wait.rule.name,
                missing=wait.check.missing,
                wait=timedelta(minutes=requires.wait_minutes),
            )
            if stored.status is WaitStatus.WAITING:
                log.info(
                    "study %s waits for %s (rule %s) until %s",
                    study.study_instance_uid,
                    ", ".join(wait.check.missing),
                    wait.rule.name,
                    stored.deadline.isoformat(timespec="seconds"),
                    extra={"action": "wait", "study_instance_uid": study.study_instance_uid},
                )
        for rule in plan.complete_rules:
            self.waits.end(study.orthanc_id, rule.name, WaitStatus.QUEUED, "the required series arrived")
        return self._enqueue(study, plan, trigger)

    def check_waits(self) -> list[Job]:
        """End the waits whose deadline passed, as their rules say; return the jobs queued.

        Jobs are queued before the wait is ended (queueing is idempotent): a study Orthanc
        cannot summarise just now stays waiting and is tried again on the next pass."""
        overdue = self.waits.overdue()
        if not overdue:
            return []
        rules = {rule.name: rule for rule in self.rules()}
        queued: list[Job] = []
        for wait in overdue:
            try:
                queued += self._end_wait(wait, rules.get(wait.rule))
            except QueueFullError:
                break  # every other overdue wait would meet the same full queue
            except OrthancError as error:
                log.warning(
                    "study %s: its wait could not be ended yet: %s",
                    wait.study_instance_uid,
                    error,
                    extra={"action": "wait", "study_instance_uid": wait.study_instance_uid},
                )
        return queued

    def _end_wait(self, wait: StudyWait, rule: Rule | None) -> list[Job]:
        if rule is None or rule.requires is None or not rule.enabled:
            self.waits.end(
                wait.orthanc_study_id,
                wait.rule,
                WaitStatus.SKIPPED,
                f"rule {wait.rule!r} was deleted, disabled or no longer requires series",
            )
            return []
        missing = ", ".join(wait.missing)
        minutes = f"{rule.requires.wait_minutes:g} min"
        if rule.requires.on_timeout is OnTimeout.SKIP:
            ended = self.waits.end(
                wait.orthanc_study_id,
                wait.rule,
                WaitStatus.SKIPPED,
                f"skipped: {missing} did not arrive within {minutes} of the study becoming stable",
            )
            if ended is not None:
                log.info(
                    "study %s skipped by rule %s: %s missing",
                    wait.study_instance_uid,
                    rule.name,
                    missing,
                    extra={"action": "skip", "study_instance_uid": wait.study_instance_uid},
                )
            return []
        # a full queue leaves the study waiting; the next pass tries again (check_waits)
        self.store.queue_room().require()
        jobs = self._run_rules(wait.orthanc_study_id, [rule], JobTrigger.WAIT_TIMEOUT)
        self.waits.end(
            wait.orthanc_study_id,
            wait.rule,
            WaitStatus.QUEUED,
            f"processed without {missing}: the {minutes} wait ended",
        )
        return jobs

    def force_complete(self, study_id: str, *, actor: str) -> list[Job]:
        """An admin says the study is complete: run its matching rules without waiting for
        required series. Audited."""
        study = self.summarize(study_id)
        rules = self.rules()
        jobs = self._enqueue(
            study, plan_jobs(study, rules, self.registry, ignore_requirements=True), JobTrigger.FORCED
        )
        ended = [
            wait.rule
            for wait in self.waits.list(WaitStatus.WAITING, study=study_id)
            if self.waits.end(study_id, wait.rule, WaitStatus.FORCED, f"forced complete by {actor}")
        ]
        self.config.record_action(
            actor,
            "force-complete",
            SubjectType.JOB,
            study.study_instance_uid,
            {"orthanc_study_id": study_id, "waits_ended": ended, "jobs": [job.id for job in jobs]},
        )
        return jobs

    def _add_routing(self, study: StudySummary, planned: PlannedJob) -> None:
        """A rule asks for a pipeline whose job exists (another rule queued it, or this one
        before its required series arrived): the job also delivers to this rule's destinations."""
        existing = self.store.find_automatic(
            study.study_instance_uid, planned.pipeline.name, planned.pipeline.version
        )
        if existing is None or set(planned.destinations) <= set(existing.destinations):
            return
        merged = self.store.add_routing(
            existing.id, destinations=planned.destinations, rules=planned.rules, priority=planned.priority
        )
        if merged is None:
            log.warning(
                "study %s: rules %s ask for %s results at %s, but job %s has finished and delivered "
                "already; run the study again (Run now) to send them there",
                study.study_instance_uid,
                ", ".join(planned.rules),
                planned.pipeline.name,
                ", ".join(sorted(set(planned.destinations) - set(existing.destinations))),
                existing.id,
                extra={
                    "action": "route",
                    "study_instance_uid": study.study_instance_uid,
                    "job_id": existing.id,
                },
            )

    def _report_grown_series(self, study: StudySummary, planned: PlannedJob) -> None:
        """The study is stable again, and the series its done job ran on has more instances now
        than the job read: a transfer cut off and completed later, or a study sent in parts. The
        results in the study describe part of the series. The job is not run again by itself (a
        second set of results beside the first would leave the reader to guess which is right):
        the admin is told, once per stable event, to run the study again."""
        existing = self.store.find_automatic(
            study.study_instance_uid, planned.pipeline.name, planned.pipeline.version
        )
        if existing is None or existing.status is not JobStatus.DONE or not existing.result:
            return
        read = existing.result.get("source_instances")
        series_uid = existing.result.get("source_series_instance_uid")
        now = next(
            (s.summary for s in study.input_series() if s.summary.series_instance_uid == series_uid), None
        )
        if not isinstance(read, int) or now is None or now.instance_count <= read:
            return
        log.warning(
            "study %s: series %s has %d instances now, but job %s (%s) ran on the %d that had "
            "arrived, so its results cover part of the series; run the study again (Run now) to "
            "process the whole series",
            study.study_instance_uid,
            series_uid,
            now.instance_count,
            existing.id,
            existing.pipeline_name,
            read,
            extra={"action": "route", "study_instance_uid": study.study_instance_uid, "job_id": existing.id},
        )

    def _run_rules(self, study_id: str, rules: list[Rule], trigger: JobTrigger) -> list[Job]:
        study = self.summarize(study_id)
        return self._enqueue(study, plan_jobs(study, rules, self.registry, ignore_requirements=True), trigger)

    def _enqueue(self, study: StudySummary, plan: RoutingPlan, trigger: JobTrigger) -> list[Job]:
        queued = []
        for planned in plan.jobs:
            job = self.store.enqueue(
                orthanc_study_id=study.orthanc_id,
                study_instance_uid=study.study_instance_uid,
                pipeline_name=planned.pipeline.name,
                pipeline_version=planned.pipeline.version,
                trigger=trigger,
                priority=planned.priority,
                destinations=planned.destinations,
                rules=planned.rules,
                series_instance_uid=planned.series.summary.series_instance_uid,
            )
            if job is not None:
                queued.append(job)
            else:
                self._add_routing(study, planned)
                self._report_grown_series(study, planned)
        for problem in plan.problems:
            log.warning(
                "study %s: %s",
                study.study_instance_uid,
                problem,
                extra={"action": "route", "study_instance_uid": study.study_instance_uid},
            )
        log.info(
            "routed study %s (%s): %s",
            study.study_instance_uid,
            trigger,
            ", ".join(f"job {job.id} {job.pipeline_name}" for job in queued) or "no new job",
            extra={"action": "route", "study_instance_uid": study.study_instance_uid},
        )
        return queued
