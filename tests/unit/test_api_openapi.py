"""GET /ai/openapi.json: a valid OpenAPI 3.1 document covering every route of the table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from tests.unit.api_node import ApiNode, api_node


@pytest.fixture
def node(tmp_path: Path) -> ApiNode:
    return api_node(tmp_path)


@pytest.fixture
def document(node: ApiNode) -> dict[str, Any]:
    response = node.call("GET", "/ai/openapi.json")
    assert response.status == 200
    return json.loads(response.payload())


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_operation_of_the_table_is_documented_with_its_role(
    node: ApiNode, document: dict[str, Any]
) -> None:
    for route in node.table:
        for operation in route.operations:
            documented = document["paths"][route.path][operation.method.lower()]
            assert documented["summary"] == operation.summary
            assert documented["x-required-role"] == ("admin" if operation.write else "viewer")
    declared = {(route.path, op.method.lower()) for route in node.table for op in route.operations}
    assert {(path, method) for path, item in document["paths"].items() for method in item} == declared


def test_path_and_query_parameters_are_declared_and_no_custom_header(document: dict[str, Any]) -> None:
    retry = document["paths"]["/ai/deliveries/{delivery_id}/retry"]["post"]
    names = {(p["in"], p["name"]) for p in retry["parameters"]}
    assert names == {("path", "delivery_id")}
    listing = document["paths"]["/ai/deliveries"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"status", "limit", "offset"}


def test_basic_auth_is_the_security_scheme(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["basic"] == {
        "type": "http",
        "scheme": "basic",
        "description": "an Orthanc user",
    }
    assert document["security"] == [{"basic": []}]
    assert "Sec-Fetch-Site" in document["info"]["description"]


def test_rule_and_destination_schemas_come_from_the_models(document: dict[str, Any]) -> None:
    create_rule = document["paths"]["/ai/rules"]["post"]["requestBody"]["content"]["application/json"]
    assert "condition" in create_rule["schema"]["properties"]
    schemas = document["components"]["schemas"]
    assert {"Completeness", "RequiredSeries", "DicomConfig", "DicomWebConfig"} <= set(schemas)
    assert "$defs" not in json.dumps(document["paths"])  # every reference resolves in components


def test_the_tester_accepts_json_dicom_and_multipart_related(document: dict[str, Any]) -> None:
    content = document["paths"]["/ai/rules/test"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "application/dicom", "multipart/related"}
    draft = document["paths"]["/ai/rules/test/draft"]["post"]
    assert set(draft["requestBody"]["content"]) == {"application/json", "multipart/related"}
    assert draft["x-required-role"] == "admin"
    export = document["paths"]["/ai/rules/export"]["get"]["responses"]["200"]["content"]
    assert set(export) == {"application/yaml"}


def test_me_is_in_the_table_and_the_document(node: ApiNode, document: dict[str, Any]) -> None:
    # /ai/me used to be merged in by the plugin after the document was built from the table.
    me = document["paths"]["/ai/me"]["get"]
    assert me["x-required-role"] == "viewer"
    schema = me["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["properties"]["role"]["enum"] == ["admin", "viewer", "sender", "worker"]
    # built without an access policy (as without authentication): the anonymous admin
    answer = node.call("GET", "/ai/me")
    assert (answer.status, answer.body) == (200, {"user": "anonymous", "role": "admin"})
