"""What the admin routes share: turning bad input into a 4xx answer, paging, JSON bodies.

A handler raises :class:`RequestError` wherever it finds bad input, however deep; the
:func:`answers` wrapper turns it into the ``{"error": ...}`` answer, so handlers read straight
through instead of checking a return value at every step.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from node.errors import NodeError
from node.web.http import ApiResponse, Request, error

MAX_PAGE = 1000


class RequestError(NodeError):
    """Bad input to a route: answered with ``status`` and ``{"error": message, **details}``."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.details = details


def answers(handler: Callable[[Request], ApiResponse]) -> Callable[[Request], ApiResponse]:
    @functools.wraps(handler)
    def wrapper(request: Request) -> ApiResponse:
        try:
            return handler(request)
        except RequestError as problem:
            return error(problem.status, problem.message, **problem.details)

    return wrapper


def page(query: Mapping[str, str], default: int = 100) -> tuple[int, int]:
    """``limit`` and ``offset`` from the query; 400 when they are not whole numbers in range."""
    try:
        limit = int(query.get("limit", default))
        offset = int(query.get("offset", 0))
    except ValueError as problem:
        raise RequestError(400, "limit and offset must be whole numbers") from problem
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise RequestError(400, f"limit must be 1-{MAX_PAGE} and offset 0 or more")
    return limit, offset


def listing_query(statuses: Iterable[enum.Enum], noun: str) -> dict[str, str]:
    """The query parameters of a listing by status, for the route table: status, limit, offset."""
    return {
        "status": f"keep one status ({', '.join(str(status.value) for status in statuses)})",
        "limit": f"page size, 1-{MAX_PAGE} (default 100)",
        "offset": f"{noun} to skip",
    }


def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object; 400 otherwise."""
    try:
        body = request.json()
    except ValueError as problem:
        raise RequestError(400, str(problem)) from problem
    if not isinstance(body, dict):
        raise RequestError(400, f"the request body must be a JSON object, not {type(body).__name__}")
    return body


def flag(query: Mapping[str, str], name: str, default: bool) -> bool:
    """A true/false query parameter; 400 for anything else."""
    value = query.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise RequestError(400, f"{name} must be true or false, not {value!r}")


def path_id(value: str, noun: str) -> int:
    """A numeric id from the path; 404 (there is no such thing) when it is not a number."""
    try:
        return int(value)
    except ValueError as problem:
        raise RequestError(404, f"there is no {noun} {value!r}") from problem


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
