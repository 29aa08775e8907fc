"""/ai/destinations: secrets kept and never shown, the built-in this-orthanc, the Test action."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.web.destinations_api import _target_changes
from tests.unit.api_node import ApiNode, api_node

SECRET = "s3cr3t-Pa55-never-shown"


@pytest.fixture
def node(tmp_path: Path) -> ApiNode:
    return api_node(tmp_path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dicomweb(**changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        "type": "dicomweb",
        "name": "research",
        "url": "https://pacs.example.org/dicom-web",
        "auth": {"type": "basic", "username": "ai", "password": SECRET},
    }
    return {**document, **changes}


def dicom(port: int, **changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        "type": "dicom",
        "name": "pacs",
        "ae_title": "PACS",
        "host": "127.0.0.1",
        "port": port,
        "timeout": 3,
    }
    return {**document, **changes}


def test_a_secret_is_stored_but_never_in_any_answer(node: ApiNode) -> None:
    answers = [node.call("POST", "/ai/destinations", json=dicomweb())]
    answers.append(node.call("GET", "/ai/destinations"))
    answers.append(node.call("GET", "/ai/destinations/research"))
    answers.append(node.call("PUT", "/ai/destinations/research", json=dicomweb(timeout=20)))
    answers.append(node.call("GET", "/ai/audit"))
    assert [a.status for a in answers] == [201, 200, 200, 200, 200]
    for answer in answers:
        assert SECRET not in answer.payload().decode()
    assert answers[2].body["auth"] == {"type": "basic", "username": "ai", "has_password": True}
    stored = node.config.get_destination("research")
    assert stored is not None and stored.document["auth"]["password"] == SECRET


def test_put_without_the_secret_keeps_the_stored_one(node: ApiNode) -> None:
    node.call("POST", "/ai/destinations", json=dicomweb())
    shown = node.call("GET", "/ai/destinations/research").body
    shown["timeout"] = 15  # the public view sent back as a form would, with has_password
    assert node.call("PUT", "/ai/destinations/research", json=shown).status == 200
    without = dicomweb(auth={"type": "basic", "username": "ai"})
    assert node.call("PUT", "/ai/destinations/research", json=without).status == 200
    stored = node.config.get_destination("research")
    assert stored is not None
    assert stored.document["auth"] == {"type": "basic", "username": "ai", "password": SECRET}
    assert stored.document["timeout"] == 60.0


@pytest.mark.parametrize(
    "moved",
    [
        {"url": "https://elsewhere.example.org/dicom-web"},
        {"auth": {"type": "basic", "username": "someone-else", "has_password": True}},
    ],
    ids=["url", "user"],
)
def test_a_put_that_moves_a_dicomweb_destination_must_give_its_secret_again(
    node: ApiNode, moved: dict[str, object]
) -> None:
    node.call("POST", "/ai/destinations", json=dicomweb())
    shown = node.call("GET", "/ai/destinations/research").body
    answer = node.call("PUT", "/ai/destinations/research", json={**shown, **moved})
    assert answer.status == 422
    assert "so the stored auth.password was not kept" in answer.body["error"]
    stored = node.config.get_destination("research")
    assert stored is not None and stored.document["url"] == "https://pacs.example.org/dicom-web"


def test_a_put_that_moves_a_destination_and_gives_the_secret_stores_the_new_one(node: ApiNode) -> None:
    node.call("POST", "/ai/destinations", json=dicomweb())
    moved = dicomweb(url="https://elsewhere.example.org/dicom-web")
    moved["auth"] = {"type": "basic", "username": "ai", "password": "new-one"}
    assert node.call("PUT", "/ai/destinations/research", json=moved).status == 200
    stored = node.config.get_destination("research")
    assert stored is not None and stored.document["auth"]["password"] == "new-one"


def test_a_dicom_destinations_host_and_port_are_what_a_secret_is_bound_to() -> None:
    # DICOM destinations hold no secret today (TLS uses files); the rule is the same for all
    stored = {"type": "dicom", "host": "pacs", "port": 104, "tls": {"ca_file": "/ca.pem"}}
    assert _target_changes({**stored, "port": "104"}, stored) == []
    assert _target_changes({**stored, "host": "10.1.2.3", "port": 11113}, stored) == ["host", "port"]


def test_put_with_a_new_secret_replaces_it(node: ApiNode) -> None:
    node.call("POST", "/ai/destinations", json=dicomweb())
    node.call("PUT", "/ai/destinations/research", json=dicomweb(auth={"type": "bearer", "token": "t0k"}))
    stored = node.config.get_destination("research")
    assert stored is not None and stored.document["auth"] == {"type": "bearer", "token": "t0k"}


def test_an_invalid_destination_names_each_field(node: ApiNode) -> None:
    response = node.call("POST", "/ai/destinations", json=dicom(70000, ae_title="A" * 17))
    assert response.status == 422
    assert {p["field"] for p in response.body["problems"]} == {"port", "ae_title"}


def test_the_body_must_name_the_destination_of_the_path(node: ApiNode) -> None:
    node.call("POST", "/ai/destinations", json=dicomweb())
    assert node.call("PUT", "/ai/destinations/research", json=dicomweb(name="other")).status == 400
    assert node.call("PUT", "/ai/destinations/missing", json=dicomweb(name="missing")).status == 404


def test_this_orthanc_is_listed_and_built_in(node: ApiNode) -> None:
    listed = node.call("GET", "/ai/destinations").body
    assert listed[0] == {"type": "this-orthanc", "name": "this-orthanc", "builtin": True}
    assert node.call("PUT", "/ai/destinations/this-orthanc", json={"type": "this-orthanc"}).status == 405
    assert node.call("DELETE", "/ai/destinations/this-orthanc").status == 405
    created = node.call("POST", "/ai/destinations", json={"type": "this-orthanc", "name": "mine"})
    assert created.status == 409


def test_a_destination_a_rule_uses_cannot_be_deleted(node: ApiNode) -> None:
    node.call("POST", "/ai/destinations", json=dicom(104))
    node.call(
        "POST",
        "/ai/rules",
        json={
            "name": "to-pacs",
            "condition": 'Modality == "CT"',
            "pipelines": ["ct-tissue"],
            "destinations": ["pacs"],
        },
    )
    response = node.call("DELETE", "/ai/destinations/pacs")
    assert response.status == 409 and response.body["rules"] == ["to-pacs"]
    node.call("DELETE", "/ai/rules/to-pacs")
    assert node.call("DELETE", "/ai/destinations/pacs").status == 200
    assert node.call("GET", "/ai/destinations/pacs").status == 404


@pytest.fixture
def echo_scp() -> Iterator[int]:
    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_ECHO, lambda event: 0x0000)]
    )
    assert server is not None
    yield port
    server.shutdown()


def test_the_test_action_echoes_a_dicom_peer_and_is_audited(node: ApiNode, echo_scp: int) -> None:
    node.call("POST", "/ai/destinations", json=dicom(echo_scp))
    outcome = node.call("POST", "/ai/destinations/pacs/test", user="bob")
    assert outcome.status == 200 and outcome.body["ok"] is True, outcome.body
    entry = node.call("GET", "/ai/audit").body[0]
    assert (entry["actor"], entry["action"], entry["subject_name"]) == ("bob", "test", "pacs")
    assert entry["after"]["ok"] is True


def test_the_test_action_says_why_a_peer_does_not_answer(node: ApiNode) -> None:
    node.call("POST", "/ai/destinations", json=dicom(free_port()))
    outcome = node.call("POST", "/ai/destinations/pacs/test")
    assert outcome.status == 200 and outcome.body["ok"] is False
    assert outcome.body["message"]
    json.dumps(outcome.body)


def test_this_orthanc_can_be_tested(node: ApiNode) -> None:
    outcome = node.call("POST", "/ai/destinations/this-orthanc/test").body
    assert outcome == {"ok": True, "message": "this Orthanc (1.12.5) answers"}
