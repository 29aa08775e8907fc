"""Routing rules, destinations and the audit trail, stored in the job database.

Storage only: the documents are plain JSON objects, validated before they get here by
:mod:`node.rules` (a dumped :class:`node.rules.model.Rule`) and :mod:`node.delivery`.
Every change writes its audit entry — who, when, the document before and after — in the same
transaction as the change itself, so a change is never without its entry, nor an entry without
its change. Secrets (any key named like password, token or secret, at any depth) are masked in
the audit trail and stored sealed (encrypted, :mod:`node.db.secrets`) in the destination
documents; a store given the key opens them again on reading, and the API layer must never
return them.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Engine, Row, Table, delete, insert, select, update

from node.db.common import database_now, json_object, parse_enum, require_page, require_text, to_iso
from node.db.database import WRITE
from node.db.errors import ConfigNotFoundError
from node.db.models import AuditRow, DestinationRow, RuleRow
from node.db.secrets import SecretBox, clear_secrets
from node.db.secrets import is_secret_key as is_secret_key  # the API's import of it
from node.errors import ConfigurationError

RULES = cast(Table, RuleRow.__table__)
DESTINATIONS = cast(Table, DestinationRow.__table__)
AUDIT = cast(Table, AuditRow.__table__)

#: What replaces a secret's value in the audit trail.
MASK = "********"


class SubjectType(enum.StrEnum):
    """What an audit entry is about."""

    RULE = "rule"
    DESTINATION = "destination"
    SETTING = "setting"
    JOB = "job"
    DELIVERY = "delivery"
    #: a study's routing (a Retry of a study set aside)
    STUDY = "study"


def mask_secrets(value: Any) -> Any:
    """A copy of the JSON ``value`` with the value of every key whose name contains
    ``password``, ``token`` or ``secret`` (any case, at any depth) replaced by :data:`MASK`.

    ``None`` values stay ``None``, so the trail still shows that no secret was set.
    """
    if isinstance(value, Mapping):
        return {
            key: (MASK if item is not None else None) if is_secret_key(key) else mask_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(item) for item in value]
    return value


@dataclass(frozen=True)
class StoredRule:
    """A rule as stored: its name and its document (a dumped :class:`node.rules.model.Rule`)."""

    name: str
    document: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class StoredDestination:
    """A destination as stored. ``document`` holds its secrets, opened if the store has the
    key (sealed otherwise): never return it as it is."""

    name: str
    type: str
    document: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime
    #: secrets the store's key could not open (lost or replaced key): None in ``document``
    unreadable_secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuditEntry:
    """One change or manual action; ``before`` and ``after`` have their secrets masked."""

    id: int
    at: datetime
    actor: str
    action: str
    subject_type: str
    subject_name: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": to_iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "subject_type": self.subject_type,
            "subject_name": self.subject_name,
            "before": None if self.before is None else dict(self.before),
            "after": None if self.after is None else dict(self.after),
        }


class ConfigStore:
    """Rules, destinations and the audit trail over one SQLAlchemy engine.

    Every method is one short transaction. The schema must be current
    (:func:`node.db.migrate`). ``clock`` replaces the time source (tests). ``secrets`` seals
    destination secrets on saving and opens them on reading; without it, destinations are read
    with their secrets sealed (their names and settings only) and a secret cannot be saved.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] | None = None,
        secrets: SecretBox | None = None,
    ) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(**WRITE)
        self._clock = clock
        self._secrets = secrets

    # -- rules ------------------------------------------------------------------------------

    def list_rules(self) -> builtins.list[StoredRule]:
        """All rules, by name."""
        with self._engine.begin() as connection:
            rows = connection.execute(select(RULES).order_by(RULES.c.name)).all()
        return [_rule(row) for row in rows]

    def get_rule(self, name: str) -> StoredRule | None:
        with self._engine.begin() as connection:
            row = connection.execute(select(RULES).where(RULES.c.name == name)).first()
        return None if row is None else _rule(row)

    def save_rule(
        self, rule_document: Mapping[str, Any], *, actor: str
    ) -> tuple[StoredRule | None, StoredRule]:
        """Create or replace the rule named ``rule_document["name"]``; return it before (``None``
        if new) and after. An unchanged rule is not written and adds no audit entry."""
        require_text("actor", actor, 200)
        document = json_object("rule document", rule_document)
        require_text("rule name", document.get("name"), 64)
        before, after = self._save(
            RULES, SubjectType.RULE, cast(str, document["name"]), {"document": document}, actor=actor
        )
        return (None if before is None else _rule(before)), _rule(after)

    def delete_rule(self, name: str, *, actor: str) -> StoredRule:
        """Delete a rule; return it. :class:`ConfigNotFoundError` if there is none."""
        require_text("actor", actor, 200)
        return _rule(self._delete(RULES, SubjectType.RULE, name, actor=actor))

    # -- destinations -----------------------------------------------------------------------

    def list_destinations(self) -> builtins.list[StoredDestination]:
        """All destinations, by name (secrets included: never return them as they are)."""
        with self._engine.begin() as connection:
            rows = connection.execute(select(DESTINATIONS).order_by(DESTINATIONS.c.name)).all()
        return [self._destination(row) for row in rows]

    def get_destination(self, name: str) -> StoredDestination | None:
        with self._engine.begin() as connection:
            row = connection.execute(select(DESTINATIONS).where(DESTINATIONS.c.name == name)).first()
        return None if row is None else self._destination(row)

    def save_destination(
        self, name: str, type: str, document: Mapping[str, Any], *, actor: str
    ) -> tuple[StoredDestination | None, StoredDestination]:
        """Create or replace the destination ``name``; return it before (``None`` if new) and
        after. Its secrets are stored sealed; the audit entry has them masked. An unchanged
        destination is not written and adds no audit entry."""
        require_text("actor", actor, 200)
        require_text("destination name", name, 64)
        require_text("destination type", type, 32)
        clear = json_object("destination document", document)
        values = {"type": type, "document": self._sealed(name, clear)}

        def unchanged(row: Row[Any]) -> bool:
            # sealing the same secret twice gives two tokens (a random IV): compare opened
            return bool(row.type == type and self._destination(row).document == clear)

        before, after = self._save(
            DESTINATIONS, SubjectType.DESTINATION, name, values, actor=actor, unchanged=unchanged
        )
        return (None if before is None else self._destination(before)), self._destination(after)

    def delete_destination(self, name: str, *, actor: str) -> StoredDestination:
        """Delete a destination; return it. :class:`ConfigNotFoundError` if there is none."""
        require_text("actor", actor, 200)
        return self._destination(self._delete(DESTINATIONS, SubjectType.DESTINATION, name, actor=actor))

    def seal_clear_secrets(self) -> builtins.list[str]:
        """Seal the secrets that a node before sealing stored in clear; return the names of the
        destinations changed. Not audited: the configuration itself does not change."""
        if self._secrets is None:
            raise ConfigurationError("sealing stored secrets needs the secrets key")
        sealed = []
        with self._write() as connection:
            rows = connection.execute(select(DESTINATIONS).with_for_update()).all()
            for row in rows:
                if clear_secrets(row.document):
                    connection.execute(
                        update(DESTINATIONS)
                        .where(DESTINATIONS.c.id == row.id)
                        .values(document=self._secrets.seal(row.document))
                    )
                    sealed.append(row.name)
        return sealed

    # -- audit trail ------------------------------------------------------------------------

    def record_action(
        self,
        actor: str,
        action: str,
        subject_type: SubjectType | str,
        subject_name: str,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Record a manual action (retry a job, cancel a delivery, change a setting, …);
        ``details`` (secrets masked) is stored as the entry's ``after``."""
        require_text("actor", actor, 200)
        require_text("action", action, 64)
        require_text("subject_name", subject_name, 200)
        kind = parse_enum(SubjectType, subject_type, "audit subject type")
        after = None if details is None else json_object("details", details)
        with self._write() as connection:
            now = database_now(connection, self._clock)
            row = self._audit(
                connection,
                now,
                actor=actor,
                action=action,
                subject_type=kind,
                subject_name=subject_name,
                before=None,
                after=after,
            )
        return _entry(row)

    def audit(self, limit: int = 100, offset: int = 0) -> builtins.list[AuditEntry]:
        """Audit entries, newest first. ``limit`` is 1 to 1000."""
        require_page(limit, offset)
        query = select(AUDIT).order_by(AUDIT.c.at.desc(), AUDIT.c.id.desc()).limit(limit).offset(offset)
        with self._engine.begin() as connection:
            rows = connection.execute(query).all()
        return [_entry(row) for row in rows]

    # -- internals --------------------------------------------------------------------------

    def _destination(self, row: Row[Any]) -> StoredDestination:
        document: dict[str, Any] = dict(row.document)
        unreadable: tuple[str, ...] = ()
        if self._secrets is not None:
            opened = self._secrets.open(row.document)
            document, unreadable = opened.document, opened.unreadable
        return StoredDestination(
            name=row.name,
            type=row.type,
            document=document,
            created_at=row.created_at,
            updated_at=row.updated_at,
            unreadable_secrets=unreadable,
        )

    def _sealed(self, name: str, document: dict[str, Any]) -> dict[str, Any]:
        if self._secrets is not None:
            return self._secrets.seal(document)
        clear = clear_secrets(document)
        if clear:
            raise ConfigurationError(
                f"destination {name!r}: {', '.join(clear)} cannot be stored without the secrets "
                "key (this store was opened without one)"
            )
        return document

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        # on SQLite: BEGIN IMMEDIATE, so the transaction holds the write lock from its start
        with self._write_engine.begin() as connection:
            yield connection

    def _save(
        self,
        table: Table,
        kind: SubjectType,
        name: str,
        values: dict[str, Any],
        *,
        actor: str,
        unchanged: Callable[[Row[Any]], bool] | None = None,
    ) -> tuple[Row[Any] | None, Row[Any]]:
        """Insert or update the row named ``name`` with ``values`` and audit the change; an
        unchanged row (``unchanged``, by default: every value equal) is returned as both before
        and after, without an audit entry."""
        with self._write() as connection:
            now = database_now(connection, self._clock)
            before = connection.execute(select(table).where(table.c.name == name).with_for_update()).first()
            if before is None:
                # Two concurrent creations of one new name on PostgreSQL: the second INSERT
                # fails on the unique name and its transaction rolls back; the caller may
                # simply save again.
                after = connection.execute(
                    insert(table)
                    .values(name=name, **values, created_at=now, updated_at=now)
                    .returning(*table.c)
                ).one()
            elif (unchanged or _same_values(values))(before):
                return before, before
            else:
                after = connection.execute(
                    update(table)
                    .where(table.c.id == before.id)
                    .values(**values, updated_at=now)
                    .returning(*table.c)
                ).one()
            self._audit(
                connection,
                now,
                actor=actor,
                action="create" if before is None else "update",
                subject_type=kind,
                subject_name=name,
                before=None if before is None else _audited(kind, before),
                after=_audited(kind, after),
            )
        return before, after

    def _delete(self, table: Table, kind: SubjectType, name: str, *, actor: str) -> Row[Any]:
        with self._write() as connection:
            now = database_now(connection, self._clock)
            row = connection.execute(delete(table).where(table.c.name == name).returning(*table.c)).first()
            if row is None:
                raise ConfigNotFoundError(f"there is no {kind.value} named {name!r}")
            self._audit(
                connection,
                now,
                actor=actor,
                action="delete",
                subject_type=kind,
                subject_name=name,
                before=_audited(kind, row),
                after=None,
            )
        return row

    @staticmethod
    def _audit(
        connection: Connection,
        now: datetime,
        *,
        actor: str,
        action: str,
        subject_type: SubjectType,
        subject_name: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
    ) -> Row[Any]:
        return connection.execute(
            insert(AUDIT)
            .values(
                at=now,
                actor=actor,
                action=action,
                subject_type=subject_type.value,
                subject_name=subject_name,
                before=None if before is None else mask_secrets(before),
                after=None if after is None else mask_secrets(after),
            )
            .returning(*AUDIT.c)
        ).one()


def _same_values(values: Mapping[str, Any]) -> Callable[[Row[Any]], bool]:
    return lambda row: all(row._mapping[column] == value for column, value in values.items())


def _audited(kind: SubjectType, row: Row[Any]) -> dict[str, Any]:
    """A rule's or destination's document as the audit trail shows it: a destination's starts
    with its type, which is stored in its own column."""
    if kind is SubjectType.DESTINATION:
        return {"type": row.type, **row.document}
    return dict(row.document)


def _rule(row: Row[Any]) -> StoredRule:
    return StoredRule(
        name=row.name, document=dict(row.document), created_at=row.created_at, updated_at=row.updated_at
    )


def _entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        subject_type=row.subject_type,
        subject_name=row.subject_name,
        before=row.before,
        after=row.after,
    )
