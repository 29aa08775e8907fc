"""/ai/deliveries, /ai/audit, /ai/dashboard and the manual actions on jobs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from node.db.jobs import Job, JobTrigger
from tests.unit.api_node import STUDY_UID, ApiNode, api_node


@pytest.fixture
def node(tmp_path: Path) -> ApiNode:
    return api_node(tmp_path)


def queued_job(node: ApiNode, pipeline: str = "ct-tissue") -> Job:
    job = node.jobs.enqueue(
        orthanc_study_id="study-1",
        study_instance_uid=STUDY_UID,
        pipeline_name=pipeline,
        pipeline_version="1",
        trigger=JobTrigger.MANUAL,
    )
    assert job is not None
    return job


def failed_delivery(node: ApiNode, job: Job) -> int:
    [delivery] = node.deliveries.create_for_job(job.id, ["pacs"], max_attempts=1)
    claimed = node.deliveries.claim_due("worker-1", 60)
    assert claimed is not None and claimed.id == delivery.id
    node.deliveries.failed_attempt(
        delivery.id, "worker-1", "PACS refused the association", backoff=lambda n: timedelta(0)
    )
    return delivery.id


def failed_job(node: ApiNode) -> Job:
    job = queued_job(node, "brain-extraction")
    claimed = node.jobs.claim(worker_id="worker-1", lease_seconds=60, pipelines=["brain-extraction"])
    assert claimed is not None and claimed.id == job.id
    return node.jobs.fail(job.id, "worker-1", error="no MR series", stage_timings={})


def test_deliveries_are_listed_and_filtered_by_status(node: ApiNode) -> None:
    failed_delivery(node, queued_job(node))
    assert [d["status"] for d in node.call("GET", "/ai/deliveries").body] == ["failed"]
    assert node.call("GET", "/ai/deliveries", query={"status": "pending"}).body == []
    assert node.call("GET", "/ai/deliveries", query={"status": "lost"}).status == 400
    assert node.call("GET", "/ai/deliveries", query={"limit": "0"}).status == 400


def test_a_failed_delivery_is_retried_and_the_retry_audited(node: ApiNode) -> None:
    delivery_id = failed_delivery(node, queued_job(node))
    retried = node.call("POST", f"/ai/deliveries/{delivery_id}/retry", user="carol")
    assert retried.status == 200 and retried.body["status"] == "pending"
    entry = node.call("GET", "/ai/audit").body[0]
    assert (entry["actor"], entry["action"], entry["subject_type"]) == ("carol", "retry", "delivery")
    assert entry["after"]["destination"] == "pacs"


def test_only_a_failed_delivery_can_be_retried(node: ApiNode) -> None:
    [delivery] = node.deliveries.create_for_job(queued_job(node).id, ["pacs"])
    assert node.call("POST", f"/ai/deliveries/{delivery.id}/retry").status == 409
    assert node.call("POST", "/ai/deliveries/999/retry").status == 404
    assert node.call("POST", "/ai/deliveries/abc/retry").status == 404


def test_a_job_shows_its_deliveries(node: ApiNode) -> None:
    job = queued_job(node)
    node.deliveries.create_for_job(job.id, ["this-orthanc", "pacs"])
    detail = node.call("GET", f"/ai/jobs/{job.id}").body
    assert [d["destination"] for d in detail["deliveries"]] == ["this-orthanc", "pacs"]
    assert node.call("GET", "/ai/jobs/999").status == 404


def test_a_queued_job_is_cancelled_and_the_cancel_audited(node: ApiNode) -> None:
    job = queued_job(node)
    cancelled = node.call("POST", f"/ai/jobs/{job.id}/cancel", user="dave")
    assert cancelled.status == 200 and cancelled.body["status"] != "queued"
    assert node.call("POST", f"/ai/jobs/{job.id}/cancel").status == 409
    entry = node.call("GET", "/ai/audit").body[0]
    assert (entry["actor"], entry["action"], entry["subject_name"]) == ("dave", "cancel", str(job.id))


def test_a_job_retry_is_audited(node: ApiNode) -> None:
    job = failed_job(node)
    assert node.call("POST", f"/ai/jobs/{job.id}/retry", user="erin").status == 200
    entry = node.call("GET", "/ai/audit").body[0]
    assert (entry["actor"], entry["action"], entry["subject_type"]) == ("erin", "retry", "job")
    assert node.call("POST", f"/ai/jobs/{job.id}/retry").status == 409
    assert len(node.call("GET", "/ai/audit").body) == 1  # a refused retry is no action


def test_the_audit_trail_pages(node: ApiNode) -> None:
    for name in ("a", "b", "c"):
        node.call(
            "POST",
            "/ai/rules",
            json={"name": name, "condition": 'Modality == "CT"', "pipelines": ["ct-tissue"]},
        )
    page = node.call("GET", "/ai/audit", query={"limit": "2", "offset": "1"}).body
    assert [entry["subject_name"] for entry in page] == ["b", "a"]


def test_the_dashboard_counts_and_lists_recent_failures(node: ApiNode) -> None:
    failed_delivery(node, queued_job(node))
    failed_job(node)
    queued_job(node, "other")
    board = node.call("GET", "/ai/dashboard").body
    assert board["queue_depth"] == 2
    assert board["jobs"]["failed"] == 1 and board["jobs"]["queued"] == 2
    assert board["deliveries"]["failed"] == 1 and board["deliveries"]["pending"] == 0
    kinds = {(f["kind"], f["pipeline"], f["destination"]) for f in board["recent_failures"]}
    assert kinds == {("job", "brain-extraction", None), ("delivery", "ct-tissue", "pacs")}
    assert all(f["error"] and f["study_instance_uid"] == STUDY_UID for f in board["recent_failures"])
    assert board["waiting_studies"] == 0
