"""/ai/rules: saving with every problem located, import/export, and the rule tester."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml

from node.credentials import Credentials, Role, User
from node.web.access import AccessPolicy
from tests.factories import make_series
from tests.unit.api_node import STUDY_UID, ApiNode, api_node


@pytest.fixture
def node(tmp_path: Path) -> ApiNode:
    return api_node(tmp_path)


def rule(**changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        "name": "ct-thin",
        "level": "series",
        "condition": 'Modality == "CT" and SliceThickness <= 2.0',
        "pipelines": ["ct-tissue"],
    }
    return {**document, **changes}


def test_a_valid_rule_is_created_listed_and_audited(node: ApiNode) -> None:
    created = node.call("POST", "/ai/rules", json=rule())
    assert created.status == 201
    assert created.body["destinations"] == ["this-orthanc"]
    assert [r["name"] for r in node.call("GET", "/ai/rules").body] == ["ct-thin"]
    entry = node.call("GET", "/ai/audit").body[0]
    assert (entry["actor"], entry["action"], entry["subject_name"]) == ("alice", "create", "ct-thin")


def test_a_syntax_error_is_refused_with_its_line_and_column(node: ApiNode) -> None:
    response = node.call(
        "POST", "/ai/rules", json=rule(condition='Modality == "CT" and\n  and SliceThickness')
    )
    assert response.status == 422
    [problem] = response.body["problems"]
    assert (problem["field"], problem["line"], problem["column"]) == ("condition", 2, 3)
    assert node.call("GET", "/ai/rules").body == []


def test_an_unknown_attribute_is_located_and_a_keyword_suggested(node: ApiNode) -> None:
    response = node.call("POST", "/ai/rules", json=rule(condition='Modality == "CT" and SliceThicknes < 2'))
    [problem] = response.body["problems"]
    assert (problem["line"], problem["column"]) == (1, 22)
    assert "SliceThickness" in problem["message"]


def test_a_required_series_condition_is_located_too(node: ApiNode) -> None:
    requires = {"series": [{"name": "T1", "condition": "Modality =="}]}
    response = node.call("POST", "/ai/rules/validate", json=rule(requires=requires))
    assert response.body["valid"] is False
    [problem] = response.body["problems"]
    assert problem["field"] == "requires.series.0.condition"
    assert "end of the condition" in problem["message"]


def test_unknown_pipelines_and_destinations_are_each_named(node: ApiNode) -> None:
    response = node.call("POST", "/ai/rules", json=rule(pipelines=["lung-nodules"], destinations=["pacs"]))
    assert response.status == 422
    fields = {p["field"]: p["message"] for p in response.body["problems"]}
    assert "'lung-nodules' is not installed" in fields["pipelines.0"]
    assert "'pacs' does not exist" in fields["destinations.0"]


def test_a_rule_may_send_to_a_stored_destination(node: ApiNode) -> None:
    node.call(
        "POST",
        "/ai/destinations",
        json={"type": "dicom", "name": "pacs", "ae_title": "PACS", "host": "pacs", "port": 104},
    )
    assert node.call("POST", "/ai/rules", json=rule(destinations=["pacs"])).status == 201


def test_a_second_rule_of_the_same_name_is_a_conflict(node: ApiNode) -> None:
    node.call("POST", "/ai/rules", json=rule())
    assert node.call("POST", "/ai/rules", json=rule()).status == 409


def test_put_changes_a_rule_but_cannot_rename_it(node: ApiNode) -> None:
    node.call("POST", "/ai/rules", json=rule())
    renamed = node.call("PUT", "/ai/rules/ct-thin", json=rule(name="other"))
    assert renamed.status == 400
    unnamed = {key: value for key, value in rule(enabled=False).items() if key != "name"}
    changed = node.call("PUT", "/ai/rules/ct-thin", json=unnamed)
    assert changed.status == 200 and changed.body["enabled"] is False
    assert node.call("PUT", "/ai/rules/missing", json=rule(name="missing")).status == 404


def test_delete_removes_the_rule(node: ApiNode) -> None:
    node.call("POST", "/ai/rules", json=rule())
    assert node.call("DELETE", "/ai/rules/ct-thin").status == 200
    assert node.call("GET", "/ai/rules/ct-thin").status == 404
    assert node.call("GET", "/ai/audit").body[0]["action"] == "delete"


# -- export and import -------------------------------------------------------------------------


def test_export_is_a_rules_file_import_reads(node: ApiNode) -> None:
    node.call("POST", "/ai/rules", json=rule())
    exported = node.call("GET", "/ai/rules/export")
    assert exported.content_type == "application/yaml"
    assert yaml.safe_load(exported.body)["rules"][0]["name"] == "ct-thin"


def _file(*rules: dict[str, object]) -> bytes:
    return yaml.safe_dump({"version": 1, "rules": list(rules)}).encode()


def test_import_is_a_dry_run_unless_told_otherwise(node: ApiNode) -> None:
    node.call("POST", "/ai/rules", json=rule())
    node.call("POST", "/ai/rules", json=rule(name="old"))
    body = _file(rule(priority="urgent"), rule(name="new"))
    preview = node.call("POST", "/ai/rules/import", body=body)
    assert preview.status == 200 and preview.body["applied"] is False
    diff = preview.body["diff"]
    assert diff["added"] == ["new"]
    assert diff["changed"] == [
        {"name": "ct-thin", "field": "priority", "before": "routine", "after": "urgent"}
    ]
    assert diff["removed"] == [] and diff["kept"] == ["old"]
    assert [r["name"] for r in node.call("GET", "/ai/rules").body] == ["ct-thin", "old"]


def test_import_applied_changes_each_rule_with_an_audit_entry(node: ApiNode) -> None:
    node.call("POST", "/ai/rules", json=rule())
    node.call("POST", "/ai/rules", json=rule(name="old"))
    body = _file(rule(priority="urgent"), rule(name="new"))
    applied = node.call("POST", "/ai/rules/import/replace", body=body)
    assert applied.body["applied"] is True and applied.body["diff"]["removed"] == ["old"]
    assert [r["name"] for r in node.call("GET", "/ai/rules").body] == ["ct-thin", "new"]
    actions = [(e["action"], e["subject_name"]) for e in node.call("GET", "/ai/audit").body[:3]]
    assert sorted(actions) == [("create", "new"), ("delete", "old"), ("update", "ct-thin")]


def test_an_invalid_file_lists_every_problem_and_changes_nothing(node: ApiNode) -> None:
    body = _file(
        rule(condition="Modality =="), rule(name="b", pipelines=[]), rule(name="c", pipelines=["nope"])
    )
    response = node.call("POST", "/ai/rules/import/apply", body=body)
    assert response.status == 422
    assert len(response.body["problems"]) == 2  # the file's own problems come first
    assert node.call("GET", "/ai/rules").body == []
    only_reference = node.call("POST", "/ai/rules/import", body=_file(rule(name="c", pipelines=["nope"])))
    assert only_reference.status == 422 and only_reference.body["problems"][0]["field"] == "c.pipelines.0"


# -- the tester ---------------------------------------------------------------------------------


def test_the_tester_explains_every_rule_on_a_stored_study(node: ApiNode) -> None:
    node.call("POST", "/ai/rules", json=rule())
    node.call("POST", "/ai/rules", json=rule(name="mr", enabled=False, condition='Modality == "MR"'))
    answer = node.call("POST", "/ai/rules/test", json={"study": "study-1"}).body
    assert answer["study"]["study_instance_uid"] == STUDY_UID
    assert [(s["key"], s["input"]) for s in answer["study"]["series"]] == [
        ("series-thin", True),
        ("series-thick", True),
        ("series-seg", False),
    ]
    thin, mr = answer["results"]
    assert (thin["rule"], thin["matched"], thin["series"]) == ("ct-thin", True, ["series-thin"])
    assert thin["pipelines"][0]["series_instance_uid"] == f"{STUDY_UID}.1"
    thick = next(v for v in thin["verdicts"] if v["subject"] == "series-thick")
    failed = [c for c in thick["clauses"] if not c["passed"]]
    assert failed[0]["explanation"] == "SliceThickness <= 2.0 is false: SliceThickness is 5.0"
    assert (mr["enabled"], mr["matched"]) == (False, False)
    assert mr["pipelines"][0]["reason"] == "the rule does not match this study"


def test_the_tester_says_why_a_pipeline_has_no_series(node: ApiNode) -> None:
    draft = rule(name="draft", condition='Modality == "CT"', pipelines=["brain-extraction"])
    answer = node.call("POST", "/ai/rules/test/draft", json={"study": "study-1", "rule": draft}).body
    [result] = answer["results"]
    assert result["rule"] == "draft" and result["matched"] is True
    [pipeline] = result["pipelines"]
    assert pipeline["series_instance_uid"] is None
    assert "modality CT is not MR" in pipeline["reason"]


def test_the_tester_reports_completeness(node: ApiNode) -> None:
    requires = {
        "series": [
            {"name": "thin", "condition": "SliceThickness <= 2"},
            {"name": "T1", "condition": 'Modality == "MR"'},
        ]
    }
    draft = rule(name="draft", requires=requires)
    [result] = node.call("POST", "/ai/rules/test/draft", json={"study": "study-1", "rule": draft}).body[
        "results"
    ]
    assert result["completeness"]["complete"] is False
    assert result["completeness"]["missing"] == ["T1"]


def test_the_tester_can_test_one_named_rule(node: ApiNode) -> None:
    node.call("POST", "/ai/rules", json=rule())
    node.call("POST", "/ai/rules", json=rule(name="other"))
    answer = node.call("POST", "/ai/rules/test", json={"study": "study-1", "rule": "other"})
    assert [r["rule"] for r in answer.body["results"]] == ["other"]
    assert node.call("POST", "/ai/rules/test", json={"study": "study-1", "rule": "x"}).status == 404


def test_the_tester_answers_404_for_a_study_orthanc_does_not_have(node: ApiNode) -> None:
    response = node.call("POST", "/ai/rules/test", json={"study": "nope"})
    assert response.status == 404 and "nope" in response.body["error"]


def test_the_stored_rules_tester_refuses_a_draft(node: ApiNode) -> None:
    # a viewer may call this path: the draft must not run here
    response = node.call("POST", "/ai/rules/test", json={"study": "study-1", "rule": rule()})
    assert response.status == 400
    assert "POST /ai/rules/test/draft (admin role)" in response.body["error"]


def test_the_draft_tester_needs_a_draft(node: ApiNode) -> None:
    response = node.call("POST", "/ai/rules/test/draft", json={"study": "study-1"})
    assert response.status == 400 and "give the draft rule" in response.body["error"]


def test_only_an_admin_may_test_a_draft(node: ApiNode) -> None:
    users = Credentials({"ann": User("ann", Role.VIEWER, "pw"), "bob": User("bob", Role.ADMIN, "pw")})
    policy = AccessPolicy(node.table, lambda: users)

    def headers(user: str) -> dict[str, str]:
        token = base64.b64encode(f"{user}:pw".encode()).decode()
        return {"authorization": f"Basic {token}", "x-requested-by": "tests"}

    assert not policy.decide("POST", "/ai/rules/test/draft", headers("ann")).allowed
    assert policy.decide("POST", "/ai/rules/test/draft", headers("bob")).allowed
    assert policy.decide("POST", "/ai/rules/test", headers("ann")).allowed


def test_an_invalid_draft_is_a_422_with_its_position(node: ApiNode) -> None:
    response = node.call(
        "POST", "/ai/rules/test/draft", json={"study": "study-1", "rule": rule(condition="Modality = 1")}
    )
    assert response.status == 422
    assert response.body["problems"][0]["column"] is not None


def _ct_file() -> bytes:
    [dataset] = make_series(np.zeros((1, 8, 8), dtype=np.int16))[:1]
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def test_the_tester_reads_an_uploaded_dicom_file(node: ApiNode) -> None:
    node.call("POST", "/ai/rules", json=rule())
    data = _ct_file()
    answer = node.call(
        "POST", "/ai/rules/test", body=data, headers={"content-type": "application/dicom"}
    ).body
    [result] = answer["results"]
    assert result["matched"] is True
    assert answer["study"]["series"][0]["instances"] == 1
    assert "fewer than 10 slices" in result["pipelines"][0]["reason"]


def _related(
    *parts: tuple[str, bytes], boundary: str = "ai-node-test-7MA4YWxk"
) -> tuple[bytes, dict[str, str]]:
    """A multipart/related body of (content type, bytes) parts, as the console builds it."""
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
        for content_type, data in parts
    )
    body += f"--{boundary}--\r\n".encode()
    return body, {"content-type": f'multipart/related; type="application/dicom"; boundary={boundary}'}


def test_the_tester_reads_uploaded_files_and_a_stored_rule_s_name(node: ApiNode) -> None:
    node.call("POST", "/ai/rules", json=rule())
    node.call("POST", "/ai/rules", json=rule(name="other", condition='Modality == "MR"'))
    body, headers = _related(("application/dicom", _ct_file()), ("application/dicom", _ct_file()))
    answer = node.call("POST", "/ai/rules/test", body=body, headers=headers)
    assert answer.status == 200, answer.body
    assert [(r["rule"], r["matched"]) for r in answer.body["results"]] == [
        ("ct-thin", True),
        ("other", False),
    ]
    body, headers = _related(("application/json", b'{"rule": "other"}'), ("application/dicom", _ct_file()))
    answer = node.call("POST", "/ai/rules/test", body=body, headers=headers)
    assert [r["rule"] for r in answer.body["results"]] == ["other"]


def test_the_tester_runs_an_unsaved_draft_on_an_uploaded_file(node: ApiNode) -> None:
    draft = json.dumps({"rule": rule(name="unsaved", condition='Modality == "MR"')}).encode()
    body, headers = _related(("application/json", draft), ("application/dicom", _ct_file()))
    answer = node.call("POST", "/ai/rules/test/draft", body=body, headers=headers)
    assert answer.status == 200, answer.body
    (result,) = answer.body["results"]
    assert (result["rule"], result["matched"]) == ("unsaved", False)


def test_a_browser_form_is_refused_with_what_to_send_instead(node: ApiNode) -> None:
    # Orthanc splits a form into one call per part before the node sees it (tested against a
    # real Orthanc in tests/integration/test_rules_and_deliveries.py): the node names the fix
    answer = node.call(
        "POST",
        "/ai/rules/test",
        body=b"--x--\r\n",
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert answer.status == 415
    assert "multipart/related" in answer.body["error"]


def test_a_file_that_is_not_dicom_is_a_400(node: ApiNode) -> None:
    response = node.call(
        "POST", "/ai/rules/test", body=b"%PDF-1.4 not an image", headers={"content-type": "application/dicom"}
    )
    assert response.status == 400
    assert "not a DICOM file" in response.body["error"]
