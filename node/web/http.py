"""What the /ai/ handlers see of an HTTP exchange, whoever serves it (the Orthanc plugin, tests).

Handlers take a :class:`Request` and return an :class:`ApiResponse`; the plugin only
translates to and from Orthanc's callback arguments, so every handler can be tested without
Orthanc.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JSON = "application/json"


@dataclass(frozen=True)
class Request:
    method: str
    #: the path as requested, e.g. /ai/jobs/12
    path: str = ""
    #: the values of the path's {parameters}, in order
    groups: tuple[str, ...] = ()
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: header names in lower case
    headers: Mapping[str, str] = field(default_factory=dict)
    #: who asks, for the audit trail (the authenticated user name)
    user: str = "anonymous"

    def json(self) -> Any:
        """The body as JSON; an empty body is ``{}``. Raises ValueError with a plain message."""
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise ValueError(f"the request body is not valid JSON: {error}") from error


@dataclass(frozen=True)
class ApiResponse:
    status: int
    #: JSON-ready data, or bytes sent as they are with ``content_type``
    body: Any
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str) and self.content_type != JSON:
            return self.body.encode()
        return json.dumps(self.body, indent=2).encode()

    def json_bytes(self) -> bytes:
        return self.payload()


def error(status: int, message: str, **details: Any) -> ApiResponse:
    """An error answer: ``{"error": message, ...details}``."""
    return ApiResponse(status, {"error": message, **details})
