"""The /ai/ REST handlers over a real job database (SQLite) and the built-in pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage

from node.db.database import migrate
from node.db.jobs import JobStore, JobTrigger
from node.errors import OrthancError
from node.intake.handoff import Intake
from node.pipeline.registry import PipelineRegistry
from node.study.series import SeriesSummary
from node.study.summary import StudySeries, StudySummary
from node.web.api import NodeApi

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _ct_study(orthanc_id: str = "study-1", uid: str = "1.2.3.4") -> StudySummary:
    summary = SeriesSummary(
        series_instance_uid=f"{uid}.1",
        modality="CT",
        instance_count=108,
        image_orientation=AXIAL,
        sop_class_uid=CTImageStorage,
    )
    return StudySummary(
        orthanc_id, uid, (StudySeries(f"{orthanc_id}-series", summary, "Siemens", {"Modality": "CT"}),)
    )


@pytest.fixture
def api(tmp_path: Path) -> NodeApi:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    migrate(url)
    studies = {"study-1": _ct_study()}

    def summarize(study_id: str) -> StudySummary:
        if study_id not in studies:
            raise OrthancError(f"no study {study_id}")
        return studies[study_id]

    intake = Intake(JobStore(url), PipelineRegistry.from_entry_points(), summarize)
    intake.seed_default_rule()  # as the plugin does on a node's first start
    return NodeApi(intake)


def test_health_lists_pipelines_and_job_counts(api: NodeApi) -> None:
    response = api.health()
    assert response.status == 200
    assert response.body["pipelines"] == ["brain-extraction", "ct-tissue"]
    assert response.body["jobs"] == {"queued": 0, "running": 0, "done": 0, "failed": 0}


def test_health_says_when_the_queue_is_full(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    migrate(url)
    store = JobStore(url, max_queued_jobs=1)
    api = NodeApi(Intake(store, PipelineRegistry.from_entry_points(), lambda study_id: _ct_study()))
    assert api.health().body["queue"] == {"queued": 0, "max_queued_jobs": 1, "full": False}
    store.enqueue(
        orthanc_study_id="s1",
        study_instance_uid="1.2.3",
        pipeline_name="ct-tissue",
        pipeline_version="1",
        trigger=JobTrigger.STABLE_STUDY,
    )
    assert api.health().body["queue"] == {"queued": 1, "max_queued_jobs": 1, "full": True}


def test_pipelines_describe_segments_with_codes(api: NodeApi) -> None:
    ct = next(p for p in api.pipelines().body if p["name"] == "ct-tissue")
    assert [s["label"] for s in ct["segments"]] == ["Body", "Bone", "Internal air"]
    json.dumps(ct)  # the description must be JSON as it is


def test_stable_study_queues_one_job_once(api: NodeApi) -> None:
    assert len(api.intake.study_ready("study-1", JobTrigger.STABLE_STUDY)) == 1
    assert api.intake.study_ready("study-1", JobTrigger.STABLE_STUDY) == []
    jobs = api.jobs({}).body
    assert [(j["pipeline_name"], j["status"], j["trigger"]) for j in jobs] == [
        ("ct-tissue", "queued", "stable-study")
    ]


def test_jobs_filter_by_status_and_study(api: NodeApi) -> None:
    api.intake.study_ready("study-1", JobTrigger.STABLE_STUDY)
    assert len(api.jobs({"status": "queued", "study": "1.2.3.4"}).body) == 1
    assert len(api.jobs({"study": "study-1"}).body) == 1
    assert api.jobs({"status": "done"}).body == []


def test_unknown_status_filter_is_a_400_naming_the_allowed_values(api: NodeApi) -> None:
    response = api.jobs({"status": "finished"})
    assert response.status == 400
    assert "queued, running, done, failed" in response.body["error"]


def test_bad_paging_is_a_400(api: NodeApi) -> None:
    assert api.jobs({"limit": "many"}).status == 400
    assert api.jobs({"limit": "0"}).status == 400


def test_unknown_job_is_a_404(api: NodeApi) -> None:
    assert api.job("999").status == 404


def test_retry_of_a_queued_job_is_a_409(api: NodeApi) -> None:
    (job,) = api.intake.study_ready("study-1", JobTrigger.STABLE_STUDY)
    assert api.retry(str(job.id)).status == 409


def test_retry_of_a_failed_job_queues_it_again(api: NodeApi) -> None:
    (job,) = api.intake.study_ready("study-1", JobTrigger.STABLE_STUDY)
    store = api.store
    store.claim(worker_id="w", lease_seconds=60)
    store.fail(job.id, "w", error="broken series", stage_timings={})
    response = api.retry(str(job.id))
    assert response.status == 200 and response.body["status"] == "queued"


def test_process_named_pipeline_queues_it(api: NodeApi) -> None:
    response = api.process_study("study-1", b'{"pipeline": "ct-tissue"}', user="alice")
    assert response.status == 200
    assert [(j["pipeline_name"], j["trigger"]) for j in response.body] == [("ct-tissue", "manual")]
    entry = api.intake.config.audit()[0]
    assert (entry.actor, entry.action, entry.subject_name) == ("alice", "process", "1.2.3.4")


def test_process_of_a_done_study_reruns_it(api: NodeApi) -> None:
    (job,) = api.intake.study_ready("study-1", JobTrigger.STABLE_STUDY)
    api.store.claim(worker_id="w", lease_seconds=60)
    api.store.complete(job.id, "w", result={}, stage_timings={})
    (rerun,) = api.process_study("study-1", b"").body
    assert rerun["generation"] == 1 and rerun["rerun_of"] == job.id


def test_process_while_a_run_is_queued_is_a_409(api: NodeApi) -> None:
    api.intake.study_ready("study-1", JobTrigger.STABLE_STUDY)
    assert api.process_study("study-1", b"").status == 409


def test_process_with_a_pipeline_that_does_not_apply_is_a_422_with_reasons(api: NodeApi) -> None:
    response = api.process_study("study-1", b'{"pipeline": "brain-extraction"}')
    assert response.status == 422
    assert "brain-extraction" in response.body["error"] and "CT" in response.body["error"]


def test_process_of_an_unknown_pipeline_is_a_404_listing_known_ones(api: NodeApi) -> None:
    response = api.process_study("study-1", b'{"pipeline": "lung-nodules"}')
    assert response.status == 404
    assert "ct-tissue" in response.body["error"]


def test_process_of_an_unknown_study_is_a_404(api: NodeApi) -> None:
    assert api.process_study("nope", b"").status == 404


def test_process_with_a_body_that_is_not_json_is_a_400(api: NodeApi) -> None:
    assert api.process_study("study-1", b"pipeline=ct").status == 400


def test_pipelines_say_which_are_warm_in_a_live_worker(api: NodeApi) -> None:
    api.store.set_state("worker:host:1", json.dumps({"loaded": ["ct-tissue"], "claims": None}))
    api.store.set_state("worker:host:2", json.dumps({"loaded": [], "claims": ["brain-extraction"]}))
    described = {p["name"]: p for p in api.pipelines().body}
    assert (described["ct-tissue"]["warm"], described["ct-tissue"]["workers"]) == (
        True,
        {"claiming": 1, "warm": 1},
    )
    assert (described["brain-extraction"]["warm"], described["brain-extraction"]["workers"]) == (
        False,
        {"claiming": 2, "warm": 0},
    )
    assert all(p["enabled"] for p in described.values())


def test_run_now_sends_results_where_the_rules_would(api: NodeApi) -> None:
    from node.rules.model import Rule

    to_pacs = Rule(
        name="ct-pacs", condition='Modality == "CT"', pipelines=["ct-tissue"], destinations=["pacs"]
    )
    api.intake.config.save_rule(to_pacs.model_dump(mode="json"), actor="test")
    (job,) = api.process_study("study-1", b'{"pipeline": "ct-tissue"}').body
    assert set(job["destinations"]) == {"this-orthanc", "pacs"}  # the seeded rule and this one
    assert set(job["rules"]) == {"all-pipelines", "ct-pacs"}


def test_installed_pipelines_left_out_by_the_configuration_are_listed_as_not_enabled(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    migrate(url)
    only_ct = PipelineRegistry.from_entry_points(enabled=["ct-tissue"])
    api = NodeApi(Intake(JobStore(url), only_ct, lambda study_id: _ct_study()))
    enabled = {p["name"]: p["enabled"] for p in api.pipelines().body}
    assert enabled == {"ct-tissue": True, "brain-extraction": False}
