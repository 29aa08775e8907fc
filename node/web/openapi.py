"""GET /ai/openapi.json: the OpenAPI 3.1 document of every /ai/ route, built from the table.

Nothing here describes a route by hand: paths, methods, summaries, parameters, media types and
schemas come from :mod:`node.web.routes`, so the document cannot drift from what the plugin
registers. The JSON schemas pydantic writes keep their shared parts under ``$defs`` with
``#/$defs/...`` references, which in an OpenAPI document would point at the document's root;
they are moved to ``components/schemas`` and the references rewritten.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from node import __version__
from node.web.routes import Operation, Route, RouteTable

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
    "description": "a message an admin can act on; some errors add details, e.g. problems",
}
DESCRIPTION = """The AI node's own REST API, served by Orthanc under /ai/.

Every request authenticates with HTTP basic auth (Orthanc's users). A user has the role
`viewer` (read operations), `admin` (everything) or `sender` (may only store studies by
STOW-RS; nothing here); each operation says which with `x-required-role` (testing a draft
rule is admin-only, though it changes nothing: a draft is code the node runs). A change sent
by a browser from a page of another site (`Sec-Fetch-Site: cross-site` or `same-site`, or an
`Origin` that is not the node's own) is refused; clients that are not browsers need no extra
header."""

_BODY_METHODS = {"POST", "PUT", "PATCH"}
_BINARY: dict[str, dict[str, Any]] = {
    "application/dicom": {"type": "string", "contentMediaType": "application/dicom"},
    # DICOM parts and an optional JSON part ({"rule": ...}), as in a STOW-RS request
    "multipart/related": {
        "type": "array",
        "items": {"type": "string", "contentMediaType": "application/dicom"},
        "description": 'DICOM parts, and an optional application/json part {"rule": ...}',
    },
}


class _Schemas:
    """components/schemas, filled from the ``$defs`` of each schema an operation declares."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def hoist(self, schema: dict[str, Any] | None) -> dict[str, Any]:
        if schema is None:
            return {}
        schema = copy.deepcopy(schema)
        definitions: dict[str, Any] = {}
        _pop_definitions(schema, definitions)
        renamed: dict[str, str] = {}
        for name, definition in definitions.items():
            target = name
            suffix = 2
            # the same name for another shape (e.g. a model's validation and serialization
            # forms): keep both, under different names
            while target in self.components and self.components[target] != _rewrite(definition, {}):
                target = f"{name}{suffix}"
                suffix += 1
            renamed[name] = target
        for name, definition in definitions.items():
            self.components[renamed[name]] = _rewrite(definition, renamed)
        return _rewrite(schema, renamed)


def _pop_definitions(value: Any, into: dict[str, Any]) -> None:
    """Move every ``$defs``, at any depth (a model's schema may be an array's items), ``into``."""
    if isinstance(value, dict):
        into.update(value.pop("$defs", {}))
        for item in value.values():
            _pop_definitions(item, into)
    elif isinstance(value, list):
        for item in value:
            _pop_definitions(item, into)


def _rewrite(value: Any, renamed: dict[str, str]) -> Any:
    """``value`` with its ``#/$defs/...`` references (``$ref``, and the discriminator mapping
    pydantic writes for tagged unions) pointing into components/schemas."""
    if isinstance(value, dict):
        return {key: _rewrite(item, renamed) for key, item in value.items()}
    if isinstance(value, list):
        return [_rewrite(item, renamed) for item in value]
    if isinstance(value, str) and value.startswith("#/$defs/"):
        name = value.removeprefix("#/$defs/")
        return f"#/components/schemas/{renamed.get(name, name)}"
    return value


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[{}]", "", path.removeprefix("/ai/")).replace("/", "_").replace("-", "_")
    return f"{method.lower()}_{words or 'root'}"


def _operation(route: Route, operation: Operation, schemas: _Schemas) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.parameters
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "description": text, "schema": {"type": "string"}}
        for name, text in operation.query.items()
    ]
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    responses: dict[str, Any] = {
        "200": {
            "description": "success",
            "content": {operation.response_media_type: {"schema": schemas.hoist(operation.response_schema)}},
        },
        "401": {"description": "no or wrong credentials"},
        "4XX": {"description": "bad input, unknown resource or a conflict", "content": error},
    }
    if operation.write:
        responses["403"] = {
            "description": "not an admin, or sent from a page of another site",
            "content": error,
        }
    document: dict[str, Any] = {
        "operationId": _operation_id(operation.method, route.path),
        "summary": operation.summary,
        "tags": [route.path.split("/")[2] if route.path.count("/") >= 2 else "node"],
        "parameters": parameters,
        "responses": responses,
        "x-required-role": "admin" if operation.write else "viewer",
    }
    if operation.method in _BODY_METHODS and (
        operation.request_schema is not None or operation.request_media_types != ("application/json",)
    ):
        document["requestBody"] = {
            "required": operation.request_schema is not None,
            "content": {
                media_type: {
                    "schema": _BINARY.get(media_type) or schemas.hoist(operation.request_schema),
                }
                for media_type in operation.request_media_types
            },
        }
    return document


def build_openapi(table: RouteTable, *, title: str = "AI node") -> dict[str, Any]:
    """The OpenAPI 3.1 document of every operation of ``table``."""
    schemas = _Schemas()
    paths: dict[str, Any] = {}
    for route in sorted(table, key=lambda item: item.path):
        paths[route.path] = {
            operation.method.lower(): _operation(route, operation, schemas) for operation in route.operations
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__, "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": [{"basic": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic", "description": "an Orthanc user"},
            },
            "schemas": {"Error": ERROR_SCHEMA, **dict(sorted(schemas.components.items()))},
        },
    }
