"""The table of /ai/ routes: path, methods, handler, who may call it, and its OpenAPI words.

One table serves three readers: the Orthanc plugin registers a REST callback per path from it,
the access filter (:mod:`node.web.access`) reads from it whether an operation changes anything
(admin role) or only reads (viewer role), and ``/ai/openapi.json`` is generated from it. A
route added here is therefore registered, guarded and documented at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from node.web.http import ApiResponse, Request

Handler = Callable[[Request], ApiResponse]
_PARAMETER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Operation:
    method: str
    handler: Handler
    summary: str
    #: needs the admin role and passes the CSRF checks: it changes something, or runs what
    #: only an admin may write (a draft rule's test); any user may call it otherwise
    write: bool = False
    #: OpenAPI fragments: the JSON schema of the request body, and of the 200 answer
    request_schema: dict[str, Any] | None = None
    response_schema: dict[str, Any] | None = None
    #: query parameters: name -> description
    query: dict[str, str] = field(default_factory=dict)
    #: media type of the request body when it is not JSON (e.g. application/dicom)
    request_media_types: tuple[str, ...] = ("application/json",)
    #: media type of the 200 answer when it is not JSON
    response_media_type: str = "application/json"
    #: the largest request body it takes, in bytes; the access filter refuses a larger one from
    #: its Content-Length, before Orthanc reads the body into memory
    max_body: int = 1024 * 1024

    def __post_init__(self) -> None:
        # Orthanc hands a REST callback the query arguments of a GET only: a POST's ?name=value
        # never reaches the handler, which would silently act as if it were absent.
        if self.query and self.method not in ("GET", "HEAD"):
            raise ValueError(
                f"{self.method} {self.summary!r} declares query parameters {sorted(self.query)}, "
                "which Orthanc does not pass to a POST, PUT or DELETE: take them in the body or the path"
            )


@dataclass(frozen=True)
class Route:
    #: OpenAPI-style path, e.g. /ai/jobs/{job_id}; a parameter matches one path segment,
    #: except a final {path} parameter, which matches the rest of the path
    path: str
    operations: tuple[Operation, ...]

    @property
    def pattern(self) -> str:
        """The regular expression Orthanc's RegisterRestCallback takes."""

        def group(match: re.Match[str]) -> str:
            return "(.*)" if match.group(1) == "path" else "([^/]+)"

        return _PARAMETER.sub(group, self.path)

    @property
    def parameters(self) -> list[str]:
        return _PARAMETER.findall(self.path)

    def operation(self, method: str) -> Operation | None:
        wanted = "GET" if method.upper() == "HEAD" else method.upper()
        return next((op for op in self.operations if op.method == wanted), None)

    @property
    def methods(self) -> list[str]:
        return [op.method for op in self.operations]


def orthanc_path(uri: str) -> str:
    """``uri`` as Orthanc routes it: its non-empty segments joined by single slashes.

    Orthanc (``Toolbox::SplitUriComponents``, then ``FlattenUri``) ignores a trailing slash, so
    ``/ai/rules/x/`` reaches the same callback as ``/ai/rules/x``; the filter must look up the
    same route or it would miss the operation. An empty segment (``//``) makes Orthanc answer
    400 before the filter runs; dropping it here too is harmless (a miss fails closed). Nothing
    is lower-cased or percent-decoded: Orthanc matches case-sensitively, and the web server
    has already decoded the URI (``%2F`` is a ``/`` by then) before Orthanc or the filter sees
    it, so decoding again would look up a path Orthanc does not route.
    """
    return "/" + "/".join(segment for segment in uri.split("/") if segment)


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        paths = [route.path for route in self.routes]
        repeated = sorted({path for path in paths if paths.count(path) > 1})
        if repeated:
            raise ValueError(f"routes declared twice: {', '.join(repeated)}")
        self._compiled = [(re.compile(f"^{route.pattern}$"), route) for route in self.routes]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.routes)

    def find(self, path: str) -> tuple[Route, tuple[str, ...]] | None:
        """The route serving ``path`` and its parameter values; None if no route does.

        The most specific route wins (``/ai/rules/test`` over ``/ai/rules/{name}``), as in
        Orthanc, which tries literal paths first. ``path`` is normalised as Orthanc does."""
        path = orthanc_path(path)
        found = [(route, match.groups()) for regex, route in self._compiled if (match := regex.match(path))]
        if not found:
            return None
        return min(found, key=lambda item: len(item[0].parameters))

    def operation(self, method: str, path: str) -> Operation | None:
        found = self.find(path)
        return None if found is None else found[0].operation(method)


def merge(*groups: Sequence[Route]) -> RouteTable:
    return RouteTable(route for group in groups for route in group)
