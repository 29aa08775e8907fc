"""Routing rules and destinations on a real node, with real peers: DCMTK storescp as a remote
PACS (C-STORE), a second Orthanc (STOW-RS), a peer that is down for a while, a wrong AE title,
and studies that wait for a series a rule requires.

Rules and destinations are set up through the node's REST API as an admin would."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from tests.integration.node_fixture import RunningNode, free_port, wait_for
from tests.integration.peers import (
    PASSWORD,
    PeerOrthanc,
    StoreScp,
    running_storescp,
    start_peer_orthanc,
    start_storescp,
)
from tests.requirements import require_or_skip

#: a CT rule's results (the defaults): SEG and SR (TID 1500)
RESULT_KINDS = ("seg", "sr")


class Admin:
    """The node's REST API as the admin user."""

    def __init__(self, node: RunningNode) -> None:
        self.node = node
        self.http = node.session("admin")

    def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        answer = self.http.request(method, f"{self.node.url}{path}", timeout=60, **kwargs)
        assert answer.status_code == expect, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json() if answer.content else None

    def only_rule(self, **rule: Any) -> None:
        """Disable every other rule (the one seeded at first start too), then save ``rule``."""
        for existing in self.call("GET", "/ai/rules"):
            if existing["name"] != rule["name"] and existing["enabled"]:
                document = {k: v for k, v in existing.items() if k not in ("created_at", "updated_at")}
                self.call("PUT", f"/ai/rules/{existing['name']}", json={**document, "enabled": False})
        if any(existing["name"] == rule["name"] for existing in self.call("GET", "/ai/rules")):
            self.call("PUT", f"/ai/rules/{rule['name']}", json=rule)
        else:
            self.call("POST", "/ai/rules", expect=201, json=rule)

    def destination(self, **config: Any) -> None:
        names = [d["name"] for d in self.call("GET", "/ai/destinations")]
        if config["name"] in names:
            self.call("PUT", f"/ai/destinations/{config['name']}", json=config)
        else:
            self.call("POST", "/ai/destinations", expect=201, json=config)

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self.call("GET", f"/ai/jobs/{job_id}"))

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
        return wait_for(what, check, timeout, self.node, interval=0.5)


def dicom_destination(name: str, port: int, ae_title: str = "REMOTE") -> dict[str, Any]:
    return {
        "type": "dicom",
        "name": name,
        "ae_title": ae_title,
        "host": "127.0.0.1",
        "port": port,
        "timeout": 5,
    }


def result_uids(job: dict[str, Any]) -> set[str]:
    return {job["result"][kind]["sop_instance_uid"] for kind in RESULT_KINDS}


def study_uid_of(folder: Path) -> str:
    return str(pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID)


@pytest.fixture(scope="module")
def peer_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerOrthanc]:
    yield from start_peer_orthanc(tmp_path_factory.mktemp("peer-orthanc"))


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreScp]:
    yield from start_storescp(tmp_path, "-v")


@pytest.fixture
def fast_retry_node(node_in: Callable[..., RunningNode]) -> RunningNode:
    """A node whose failed deliveries are retried within seconds, not minutes."""
    node = node_in(
        extra_config={"delivery": {"base_delay": 1, "factor": 1.5, "max_delay": 2, "max_attempts": 30}}
    )
    node.start()
    return node


def test_a_rule_sends_results_to_a_remote_pacs_and_a_dicomweb_server(
    fast_retry_node: RunningNode, storescp: StoreScp, peer_orthanc: PeerOrthanc, ct_sample: Path, new_study
) -> None:
    node, admin = fast_retry_node, Admin(fast_retry_node)
    admin.destination(**dicom_destination("pacs", storescp.port))
    admin.destination(
        type="dicomweb",
        name="research",
        url=peer_orthanc.dicomweb,
        auth={"type": "basic", "username": "ai", "password": PASSWORD},
    )
    admin.only_rule(
        name="ct-everywhere",
        priority="urgent",
        condition='Modality == "CT" and SliceThickness <= 3.0',
        pipelines=["ct-tissue"],
        destinations=["this-orthanc", "pacs", "research"],
    )
    study = new_study(ct_sample)
    node.send(study)
    (job,) = node.wait_for_jobs(study_uid_of(study))
    assert job["status"] == "done", job["error"]
    assert (job["rules"], job["priority"], job["destinations"]) == (
        ["ct-everywhere"],
        100,
        ["this-orthanc", "pacs", "research"],
    )
    detail = admin.job(job["id"])
    assert {d["destination"]: d["status"] for d in detail["deliveries"]} == {
        "this-orthanc": "delivered",
        "pacs": "delivered",
        "research": "delivered",
    }
    uids = result_uids(job)
    assert uids <= storescp.received_uids()
    assert uids <= peer_orthanc.instance_uids()
    # ... and into the study in this Orthanc, where the job's result links to them
    for kind in RESULT_KINDS:
        assert job["result"][kind]["orthanc_id"], kind
    # the staged files are gone once every destination has them
    assert not (node.folder / "var" / "results" / job["uid"]).exists()
    # secrets never come back
    assert PASSWORD not in admin.http.get(f"{node.url}/ai/destinations", timeout=10).text


def test_a_peer_that_is_down_gets_the_results_once_it_is_back(
    fast_retry_node: RunningNode, tmp_path: Path, ct_sample: Path, new_study
) -> None:
    require_or_skip(shutil.which("storescp") is not None, "storescp is not installed (Debian package dcmtk)")
    node, admin = fast_retry_node, Admin(fast_retry_node)
    port = free_port()  # nothing listens there yet
    admin.destination(**dicom_destination("later", port))
    admin.only_rule(
        name="ct-later", condition='Modality == "CT"', pipelines=["ct-tissue"], destinations=["later"]
    )
    study = new_study(ct_sample)
    node.send(study)
    (job,) = node.wait_for_jobs(study_uid_of(study))
    assert job["status"] == "done", job["error"]
    assert job["result"]["seg"]["orthanc_id"] is None  # this Orthanc is not a destination of the rule

    def retried() -> dict[str, Any] | None:
        (delivery,) = admin.job(job["id"])["deliveries"]
        return delivery if delivery["attempts"] >= 2 and delivery["status"] != "delivered" else None

    delivery = admin.wait_for("a second failed attempt", retried)
    assert "connection refused" in (delivery["last_error"] or "").lower(), delivery

    back = tmp_path / "peer-back"
    back.mkdir()
    with running_storescp(back, "-v", port=port) as peer:
        delivered = admin.wait_for(
            "the delivery after the peer came back",
            lambda: next((d for d in admin.job(job["id"])["deliveries"] if d["status"] == "delivered"), None),
        )
        time.sleep(1)  # a duplicate send would show up in the peer's log by now
    assert delivered["last_error"] is None
    # once each: as many store requests as objects, every object among them
    assert peer.received_uids() == result_uids(job)
    log = (back / "storescp.log").read_text(errors="replace")
    assert log.count("Received Store Request") == len(RESULT_KINDS)
    assert not (node.folder / "var" / "results" / job["uid"]).exists()


def test_a_wrong_ae_title_fails_the_delivery_clearly_and_a_retry_after_the_fix_delivers(
    node_in: Callable[..., RunningNode], ct_sample: Path, new_study
) -> None:
    node = node_in(extra_config={"delivery": {"max_attempts": 1}})
    node.start()
    admin = Admin(node)
    strict = _StrictPeer()
    try:
        admin.destination(**dicom_destination("strict-pacs", strict.port, ae_title="WRONG"))
        admin.only_rule(
            name="ct-strict",
            condition='Modality == "CT"',
            pipelines=["ct-tissue"],
            destinations=["strict-pacs"],
        )
        study = new_study(ct_sample)
        node.send(study)
        (job,) = node.wait_for_jobs(study_uid_of(study))
        (delivery,) = admin.job(job["id"])["deliveries"]
        assert delivery["status"] == "failed"
        assert "called AE title 'WRONG' not recognised" in delivery["last_error"], delivery
        assert job["result"]["deliveries"][0]["error"] == delivery["last_error"]
        assert any(f["kind"] == "delivery" for f in admin.call("GET", "/ai/dashboard")["recent_failures"])

        # the admin corrects the AE title and retries: the same results go out
        admin.destination(**dicom_destination("strict-pacs", strict.port, ae_title="REMOTE"))
        admin.call("POST", f"/ai/deliveries/{delivery['id']}/retry")
        admin.wait_for(
            "the retried delivery",
            lambda: admin.job(job["id"])["deliveries"][0]["status"] == "delivered",
        )
        assert result_uids(job) <= strict.received
        audit = admin.call("GET", "/ai/audit")
        assert any(
            (entry["action"], entry["subject_type"], entry["actor"]) == ("retry", "delivery", "admin")
            for entry in audit
        ), audit
    finally:
        strict.stop()


class _StrictPeer:
    """A pynetdicom SCP that checks the called AE title (storescp accepts any) and keeps the
    SOP Instance UIDs it receives."""

    def __init__(self) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.presentation import AllStoragePresentationContexts
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        self.received: set[str] = set()
        ae = AE(ae_title="REMOTE")
        ae.require_called_aet = True
        ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax)
        self.port = free_port()

        def store(event: Any) -> int:
            self.received.add(str(event.request.AffectedSOPInstanceUID))
            return 0x0000

        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)]
        )

    def stop(self) -> None:
        self.server.shutdown()


# --- study completeness -----------------------------------------------------------------------


def _requires_pet(name: str, *, wait_minutes: float, on_timeout: str) -> dict[str, Any]:
    return {
        "name": name,
        "level": "study",
        "condition": '"CT" in ModalitiesInStudy',
        "pipelines": ["ct-tissue"],
        "requires": {
            "series": [
                {"name": "CT", "condition": 'Modality == "CT"'},
                {"name": "PET", "condition": 'Modality == "PT"'},
            ],
            "wait_minutes": wait_minutes,
            "on_timeout": on_timeout,
        },
    }


def test_studies_wait_for_required_series_then_skip_process_or_are_forced(
    fast_retry_node: RunningNode, ct_sample: Path, new_study
) -> None:
    node, admin = fast_retry_node, Admin(fast_retry_node)

    def waits(status: str = "all") -> list[dict[str, Any]]:
        return list(admin.call("GET", f"/ai/studies/waiting?status={status}"))

    def ended(study_uid: str) -> dict[str, Any] | None:
        return next(
            (w for w in waits() if w["study_instance_uid"] == study_uid and w["status"] != "waiting"), None
        )

    # 1. skip: the PET never comes; after the wait the study is skipped with the reason
    admin.only_rule(**_requires_pet("needs-pet", wait_minutes=0.05, on_timeout="skip"))
    skipped = new_study(ct_sample)
    node.send(skipped)
    wait = admin.wait_for("the skip", lambda: ended(study_uid_of(skipped)))
    assert wait["status"] == "skipped"
    assert "PET did not arrive within 0.05 min" in wait["reason"]
    assert node.jobs(study=study_uid_of(skipped)) == []

    # 2. process anyway: the job runs on what is there, saying why
    admin.only_rule(**_requires_pet("needs-pet", wait_minutes=0.05, on_timeout="process"))
    processed = new_study(ct_sample)
    node.send(processed)
    (job,) = node.wait_for_jobs(study_uid_of(processed))
    assert (job["status"], job["trigger"]) == ("done", "wait-timeout")
    assert "processed without PET" in ended(study_uid_of(processed))["reason"]

    # 3. forced: an admin decides the study is complete before the wait ends
    admin.only_rule(**_requires_pet("needs-pet", wait_minutes=60, on_timeout="skip"))
    forced = new_study(ct_sample)
    node.send(forced)
    waiting = admin.wait_for(
        "the study to wait",
        lambda: next((w for w in waits("waiting") if w["study_instance_uid"] == study_uid_of(forced)), None),
    )
    assert waiting["missing"] == ["PET"]
    assert node.jobs(study=study_uid_of(forced)) == []
    viewer = node.session("viewer")
    refused = viewer.post(f"{node.url}/ai/studies/{waiting['orthanc_study_id']}/complete", timeout=10)
    assert refused.status_code == 403
    (queued,) = admin.call("POST", f"/ai/studies/{waiting['orthanc_study_id']}/complete")
    assert queued["trigger"] == "forced"
    (job,) = node.wait_for_jobs(study_uid_of(forced))
    assert job["status"] == "done", job["error"]
    assert ended(study_uid_of(forced))["status"] == "forced"
    assert any(entry["action"] == "force-complete" for entry in admin.call("GET", "/ai/audit"))


def test_a_rules_file_is_previewed_then_applied_through_orthanc(shared_node: RunningNode) -> None:
    # The choice used to be ?dry_run=false, which Orthanc never passes to a POST: an import
    # over REST was a dry run whatever the client asked.
    session = shared_node.session("admin")
    rules_file = (
        "version: 1\n"
        "rules:\n"
        "  - name: imported-ct\n"
        "    condition: 'Modality == \"CT\"'\n"
        "    pipelines: [ct-tissue]\n"
    )

    def send(path: str) -> dict[str, Any]:
        answer = session.post(
            f"{shared_node.url}{path}",
            data=rules_file,
            headers={"Content-Type": "application/yaml"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    assert send("/ai/rules/import")["diff"]["added"] == ["imported-ct"]
    assert session.get(f"{shared_node.url}/ai/rules/imported-ct", timeout=10).status_code == 404
    assert send("/ai/rules/import/apply")["applied"] is True
    assert session.get(f"{shared_node.url}/ai/rules/imported-ct", timeout=10).status_code == 200
    session.delete(f"{shared_node.url}/ai/rules/imported-ct", timeout=10)


def test_the_rule_tester_explains_a_stored_study(
    shared_node: RunningNode, ct_sample: Path, new_study
) -> None:
    node, admin = shared_node, Admin(shared_node)
    study = new_study(ct_sample)
    node.send(study)
    node.wait_for_jobs(study_uid_of(study))  # stored and routed by the seeded rule
    draft = {
        "name": "draft",
        "condition": 'Modality == "CT" and SliceThickness <= 1.0',
        "pipelines": ["ct-tissue"],
    }
    answer = admin.call(
        "POST",
        "/ai/rules/test/draft",
        json={"study": node.orthanc_study_id(study_uid_of(study)), "rule": draft},
    )
    (result,) = answer["results"]
    assert result["matched"] is False
    clauses = [
        clause for verdict in result["verdicts"] for clause in verdict["clauses"] if not clause["passed"]
    ]
    assert any("SliceThickness is 1.5" in clause["explanation"] for clause in clauses), clauses


def test_a_catastrophic_regex_on_a_hostile_value_does_not_stall_the_node(
    shared_node: RunningNode, ct_sample: Path
) -> None:
    # With Python's re, (a+)+$ on 30 a's and a "!" held the GIL for minutes: every request,
    # /ai/health included, waited. Conditions match with RE2 now (linear time).
    node, url = shared_node, shared_node.url
    dataset = pydicom.dcmread(sorted(ct_sample.glob("*.dcm"))[0])
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID = (
        generate_uid() for _ in range(3)
    )
    dataset.SeriesDescription = "a" * 30 + "!"
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    admin, viewer = node.session("admin"), node.session("viewer")
    stored = admin.post(f"{url}/instances", data=buffer.getvalue(), timeout=30)
    assert stored.status_code == 200, stored.text
    draft = {"name": "hostile", "condition": 'SeriesDescription =~ "(a+)+$"', "pipelines": ["ct-tissue"]}
    body = {"study": stored.json()["ParentStudy"], "rule": draft}
    assert viewer.post(f"{url}/ai/rules/test/draft", json=body, timeout=10).status_code == 403
    with ThreadPoolExecutor(max_workers=1) as pool:
        tested = pool.submit(admin.post, f"{url}/ai/rules/test/draft", json=body, timeout=20)
        health = viewer.get(f"{url}/ai/health", timeout=10)
        answer = tested.result()
    assert health.status_code == 200
    assert answer.status_code == 200, answer.text
    (result,) = answer.json()["results"]
    assert result["matched"] is False


def test_a_viewer_cannot_change_rules_or_destinations(shared_node: RunningNode) -> None:
    viewer = shared_node.session("viewer")
    url = shared_node.url
    assert viewer.get(f"{url}/ai/rules", timeout=10).status_code == 200
    rule = {"name": "sneaky", "condition": "true", "pipelines": ["ct-tissue"]}
    assert viewer.post(f"{url}/ai/rules", json=rule, timeout=10).status_code == 403
    assert viewer.delete(f"{url}/ai/rules/all-pipelines", timeout=10).status_code == 403
    destination = dicom_destination("sneaky", 104)
    assert viewer.post(f"{url}/ai/destinations", json=destination, timeout=10).status_code == 403
    assert "sneaky" not in requests.get(f"{url}/ai/rules", auth=shared_node.admin, timeout=10).text
