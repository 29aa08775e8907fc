"""Destination secrets encrypted at rest, with a key kept outside the database.

A destination's passwords and tokens are stored in the job database as ``{"sealed": TOKEN}``,
where TOKEN is a Fernet token (``cryptography``: AES-128-CBC with an HMAC-SHA256, a timestamp
and a random IV; a library recipe rather than a hand-made scheme). The key is a file beside the
database, not in it: ``DATA_DIR/secrets.key`` by default (``secrets_key_file:``), mode 600,
created on first use. A copy of ``jobs.sqlite`` or a PostgreSQL dump alone shows no secret.

Every host that shares one database (PostgreSQL) needs the same key file. A lost or replaced
key cannot be recovered: the secrets it sealed read as missing (each is named in the answer of
``GET /ai/destinations/NAME`` and in the failed delivery), and the admin enters them again with a
PUT. Nothing else in the database depends on the key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from node.errors import ConfigurationError
from node.support.private import create_private, restrict

log = logging.getLogger(__name__)

#: the one key of a sealed value's JSON object
SEALED = "sealed"
_SECRET_KEY = re.compile(r"password|token|secret", re.IGNORECASE)


def is_secret_key(key: object) -> bool:
    """Whether a configuration key names a secret (password, token, secret; any case). The
    audit trail masks these, the store seals them, and the destination API keeps and never
    returns them: one test for all, so what is masked and what is sealed cannot drift apart."""
    return isinstance(key, str) and _SECRET_KEY.search(key) is not None


def is_sealed(value: object) -> bool:
    return isinstance(value, Mapping) and set(value) == {SEALED} and isinstance(value[SEALED], str)


@dataclass(frozen=True)
class Opened:
    """A document with its secrets opened, and the dotted names of those that could not be."""

    document: dict[str, Any]
    unreadable: tuple[str, ...] = ()


class SecretBox:
    """Seals and opens the secret values of JSON documents with one Fernet key."""

    def __init__(self, key: bytes, *, source: str = "the key") -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as error:
            raise ConfigurationError(
                f"{source} is not a secrets key (32 url-safe base64-encoded bytes): {error}"
            ) from None
        #: where the key came from, for messages (a path, never the key)
        self.source = source

    @classmethod
    def from_key_file(cls, path: Path) -> SecretBox:
        """The key in ``path``, created (mode 600) if there is none yet."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            if create_private(path, Fernet.generate_key() + b"\n"):
                log.info("created the secrets key %s; back it up with the database", path)
        restrict(path)
        try:
            key = path.read_bytes().strip()
        except OSError as error:
            raise ConfigurationError(f"the secrets key file {path} cannot be read: {error}") from error
        return cls(key, source=f"the secrets key file {path}")

    def seal(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``document`` with every secret (a string under a key :func:`is_secret_key`
        names, at any depth) replaced by its sealed form; sealed values stay as they are."""
        return _map_secrets(document, self._seal_value)

    def open(self, document: Mapping[str, Any]) -> Opened:
        """A copy of ``document`` with every sealed value opened. A value this key cannot open
        (the key was lost or replaced) becomes None and is named in ``unreadable``."""
        unreadable: list[str] = []

        def open_value(value: Any, where: str) -> Any:
            if not is_sealed(value):
                return value
            try:
                return self._fernet.decrypt(value[SEALED].encode("ascii")).decode("utf-8")
            except (InvalidToken, UnicodeError):
                unreadable.append(where)
                return None

        return Opened(_map_secrets(document, open_value), tuple(unreadable))

    def _seal_value(self, value: Any, where: str) -> Any:
        if isinstance(value, str):
            return {SEALED: self._fernet.encrypt(value.encode("utf-8")).decode("ascii")}
        return value


def clear_secrets(document: Mapping[str, Any]) -> list[str]:
    """The dotted names of the secrets ``document`` holds in clear (not sealed)."""
    found: list[str] = []

    def note(value: Any, where: str) -> Any:
        if isinstance(value, str):
            found.append(where)
        return value

    _map_secrets(document, note)
    return found


def _map_secrets(document: Mapping[str, Any], change: Any, prefix: str = "") -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in document.items():
        where = f"{prefix}{key}"
        if is_secret_key(key):
            result[key] = change(value, where)
        elif isinstance(value, Mapping):
            result[key] = _map_secrets(value, change, f"{where}.")
        else:
            result[key] = value
    return result
