"""Small helpers shared by the stores of the job database (jobs, deliveries, configuration)."""

from __future__ import annotations

import enum
import json
import numbers
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, DateTime, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite

#: the most rows one list call returns
MAX_LIST_LIMIT = 1000

E = TypeVar("E", bound=enum.Enum)


def database_now(connection: Connection, clock: Callable[[], datetime] | None) -> datetime:
    """The current time: ``clock``'s if given (tests), else the PostgreSQL server's clock (so
    workers on several hosts agree), else this host's (SQLite: one host by construction)."""
    if clock is not None:
        now = clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"the clock returned {now.isoformat()} without a time zone")
        return now.astimezone(UTC)
    if connection.dialect.name == "postgresql":
        server_now = connection.execute(
            select(func.clock_timestamp(type_=DateTime(timezone=True)))
        ).scalar_one()
        return cast(datetime, server_now).astimezone(UTC)
    return datetime.now(UTC)


def to_iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def require_text(name: str, value: object, max_length: int | None = None) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} is {value!r}; it must be a non-empty string")
    if max_length is not None and len(value) > max_length:
        raise ValueError(f"{name} {value!r} is {len(value)} characters; at most {max_length} fit")


def require_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f"of {minimum} or more" if maximum is None else f"from {minimum} to {maximum}"
        raise ValueError(f"{name} is {value!r}; it must be an integer {bounds}")


def require_page(limit: int, offset: int) -> None:
    """Check a list call's ``limit`` (1 to :data:`MAX_LIST_LIMIT`) and ``offset``."""
    require_int("limit", limit, 1, MAX_LIST_LIMIT)
    require_int("offset", offset, 0)


def parse_enum(kind: type[E], value: E | str, what: str) -> E:
    """``value`` as a member of ``kind``; a ValueError naming ``what`` and the allowed values."""
    try:
        return kind(value)
    except ValueError as error:
        allowed = ", ".join(str(member.value) for member in kind)
        raise ValueError(f"{what} {value!r} is not one of {allowed}") from error


def upsert_statement(connection: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into ``table`` that can take ``ON CONFLICT`` clauses, in the connection's dialect."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def lease_duration(lease_seconds: float) -> timedelta:
    if (
        isinstance(lease_seconds, bool)
        or not isinstance(lease_seconds, numbers.Real)
        or not lease_seconds > 0
    ):
        raise ValueError(f"lease_seconds is {lease_seconds!r}; it must be a positive number")
    return timedelta(seconds=float(lease_seconds))


def json_object(name: str, value: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping, not {type(value).__name__}")
    try:
        # a copy that is plain JSON, checked here rather than half-way through the UPDATE
        return cast(dict[str, Any], json.loads(json.dumps(dict(value), allow_nan=False)))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} cannot be stored as JSON: {error}") from error
