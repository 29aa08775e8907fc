"""/ai/destinations: where results go — list, create, change, delete, and the Test action.

Secrets (a DICOMweb password or token) are stored with the destination but never leave it: every
answer is the configuration's ``public_view()`` (``has_password: true``). So that a form filled
from that view can be sent back unchanged, a PUT without a secret keeps the stored one — unless
it changes where the secret goes (URL, host, port or user name): a stored password is never sent
to an address it was not given for, so such a PUT must give it again. The built-in
``this-orthanc`` is listed and testable, never stored, changed or deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError

from node import THIS_ORTHANC
from node.db.common import to_iso
from node.db.config_store import ConfigStore, StoredDestination, SubjectType, is_secret_key
from node.delivery.base import Destination, TestOutcome
from node.delivery.config import DestinationConfig, DicomConfig, DicomWebConfig, ThisOrthancConfig
from node.errors import NodeError
from node.web.http import ApiResponse, Request
from node.web.params import RequestError, answers, json_object, plural
from node.web.routes import Operation, Route

CONFIG = TypeAdapter(DestinationConfig)
#: the Test action answers within this, whatever timeout the destination sends with
TEST_TIMEOUT = timedelta(seconds=10)
#: keys of the public view a client may send back as they came; they are not configuration
_VIEW_ONLY = frozenset({"builtin", "created_at", "updated_at"})

GetJson = Callable[[str], Any]


class DestinationsApi:
    def __init__(
        self, config: ConfigStore, get_json: GetJson, *, test_timeout: timedelta = TEST_TIMEOUT
    ) -> None:
        self.config = config
        self.get_json = get_json
        self.test_timeout = test_timeout

    def routes(self) -> list[Route]:
        config_schema = CONFIG.json_schema(mode="validation")
        view_schema: dict[str, Any] = {
            "type": "object",
            "description": "the configuration with each secret replaced by has_<field>: bool",
            "properties": {
                "name": {"type": "string"},
                "type": {"type": "string"},
                "builtin": {"type": "boolean"},
            },
        }
        return [
            Route(
                "/ai/destinations",
                (
                    Operation(
                        "GET",
                        answers(self.list_destinations),
                        "Destinations, this-orthanc first (secrets never shown)",
                        response_schema={"type": "array", "items": view_schema},
                    ),
                    Operation(
                        "POST",
                        answers(self.create),
                        "Create a destination (secrets are stored, never returned)",
                        write=True,
                        request_schema=config_schema,
                        response_schema=view_schema,
                    ),
                ),
            ),
            Route(
                "/ai/destinations/{name}",
                (
                    Operation("GET", answers(self.get), "One destination", response_schema=view_schema),
                    Operation(
                        "PUT",
                        answers(self.replace),
                        "Change a destination; a secret left out keeps the stored one",
                        write=True,
                        request_schema=config_schema,
                        response_schema=view_schema,
                    ),
                    Operation(
                        "DELETE",
                        answers(self.delete),
                        "Delete a destination no rule uses",
                        write=True,
                    ),
                ),
            ),
            Route(
                "/ai/destinations/{name}/test",
                (
                    Operation(
                        "POST",
                        answers(self.test),
                        "Test the connection (C-ECHO, a QIDO query, this Orthanc's /system)",
                        write=True,
                        response_schema={
                            "type": "object",
                            "properties": {"ok": {"type": "boolean"}, "message": {"type": "string"}},
                        },
                    ),
                ),
            ),
        ]

    # -- routes -----------------------------------------------------------------------------

    def list_destinations(self, request: Request) -> ApiResponse:
        return ApiResponse(
            200, [_builtin_view(), *(_view(stored) for stored in self.config.list_destinations())]
        )

    def get(self, request: Request) -> ApiResponse:
        name = request.groups[0]
        if name == THIS_ORTHANC:
            return ApiResponse(200, _builtin_view())
        return ApiResponse(200, _view(self._stored(name)))

    def create(self, request: Request) -> ApiResponse:
        document = _without_view_keys(json_object(request))
        name = document.get("name")
        if name == THIS_ORTHANC or document.get("type") == THIS_ORTHANC:
            raise RequestError(
                409, f"{THIS_ORTHANC!r} is built in; give the new destination another name and type"
            )
        config = _valid(document)
        if self.config.get_destination(config.name) is not None:
            raise RequestError(409, f"a destination named {config.name!r} exists already; change it with PUT")
        _, after = self.config.save_destination(
            config.name, config.type, _stored_document(config), actor=request.user
        )
        return ApiResponse(201, _view(after))

    def replace(self, request: Request) -> ApiResponse:
        name = request.groups[0]
        self._not_builtin(name, "changed")
        stored = self._stored(name)
        document = _without_view_keys(json_object(request))
        given = document.setdefault("name", name)
        if given != name:
            raise RequestError(
                400,
                f"the body names destination {given!r} but the path {name!r}; destinations cannot be renamed",
            )
        moved = _target_changes(document, stored.document)
        kept = _keep_secrets(document, {} if moved else stored.document)
        dropped = sorted(
            set(_secret_names(_keep_secrets(document, stored.document))) - set(_secret_names(kept))
        )
        note = (
            f"{' and '.join(moved)} changed, so the stored {', '.join(dropped)} was not kept "
            "(a secret is never sent to another address than its own): give it again"
            if dropped
            else None
        )
        config = _valid(kept, note=note)
        if config.type == THIS_ORTHANC:
            raise RequestError(409, f"only the built-in destination is of type {THIS_ORTHANC!r}")
        _, after = self.config.save_destination(
            name, config.type, _stored_document(config), actor=request.user
        )
        return ApiResponse(200, _view(after))

    def delete(self, request: Request) -> ApiResponse:
        name = request.groups[0]
        self._not_builtin(name, "deleted")
        stored = self._stored(name)
        users = [
            rule.name
            for rule in self.config.list_rules()
            if name in (rule.document.get("destinations") or [])
        ]
        if users:
            raise RequestError(
                409,
                f"destination {name!r} is used by rule{'s' if len(users) > 1 else ''} "
                f"{', '.join(map(repr, users))}; take it out of them first",
                rules=users,
            )
        self.config.delete_destination(name, actor=request.user)
        return ApiResponse(200, _view(stored))

    def test(self, request: Request) -> ApiResponse:
        name = request.groups[0]
        if name == THIS_ORTHANC:
            outcome = self._test_this_orthanc()
        else:
            config = _valid(dict(self._stored(name).document))
            outcome = self._remote(config).test()
        self.config.record_action(
            request.user,
            "test",
            SubjectType.DESTINATION,
            name,
            {"ok": outcome.ok, "message": outcome.message},
        )
        return ApiResponse(200, {"ok": outcome.ok, "message": outcome.message})

    # -- internals --------------------------------------------------------------------------

    def _remote(self, config: DicomConfig | DicomWebConfig | ThisOrthancConfig) -> Destination:
        if isinstance(config, ThisOrthancConfig):
            raise RequestError(
                409, f"the stored destination {config.name!r} is of the built-in type {config.type!r}"
            )
        # Imported here: the kinds import pynetdicom and dicomweb-client, which only the Test
        # action needs in this process (Orthanc's).
        from node.delivery.kinds import remote_from_config

        capped = config.model_copy(update={"timeout": min(config.timeout, self.test_timeout)})
        return remote_from_config(capped)

    def _test_this_orthanc(self) -> TestOutcome:
        # In the plugin, this Orthanc is reached in-process (RestApiGet), not over HTTP.
        try:
            system = self.get_json("/system")
        except NodeError as error:
            return TestOutcome(ok=False, message=str(error))
        return TestOutcome(
            ok=True, message=f"this Orthanc ({system.get('Version', 'unknown version')}) answers"
        )

    def _stored(self, name: str) -> StoredDestination:
        stored = self.config.get_destination(name)
        if stored is None:
            raise RequestError(404, f"there is no destination named {name!r}")
        return stored

    @staticmethod
    def _not_builtin(name: str, done: str) -> None:
        if name == THIS_ORTHANC:
            raise RequestError(
                405, f"{THIS_ORTHANC!r} is built in and cannot be {done}", allowed=["GET", "POST test"]
            )


def _valid(
    document: Mapping[str, Any], *, note: str | None = None
) -> DicomConfig | DicomWebConfig | ThisOrthancConfig:
    """The configuration, or a 422 naming each problem (and ``note``, why a secret is missing)."""
    try:
        return CONFIG.validate_python(document)
    except ValidationError as error:
        problems = [
            {
                # pydantic names the union member first (dicomweb.auth.basic.password): drop it
                "field": ".".join(str(part) for part in detail["loc"][1:])
                or ".".join(map(str, detail["loc"])),
                "message": str(detail["msg"]).removeprefix("Value error, "),
            }
            for detail in error.errors()
        ]
        message = f"the destination is invalid ({plural(len(problems), 'problem')})"
        raise RequestError(422, f"{message}; {note}" if note else message, problems=problems) from error


def _without_view_keys(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key not in _VIEW_ONLY}


def _keep_secrets(given: Any, stored: Any) -> Any:
    """``given`` with each secret it leaves out (or gives as ``has_<secret>`` from the public
    view) taken from ``stored``, where the enclosing objects are of the same ``type``."""
    if not isinstance(given, dict):
        return given
    merged: dict[str, Any] = {}
    same_kind = isinstance(stored, dict) and given.get("type") == stored.get("type")
    for key, value in given.items():
        if key.startswith("has_") and is_secret_key(key):
            continue
        merged[key] = _keep_secrets(value, stored.get(key) if isinstance(stored, dict) else None)
    if same_kind:
        for key, value in stored.items():
            if is_secret_key(key) and merged.get(key) is None and value is not None:
                merged[key] = value
    return merged


#: what a stored secret is bound to, at any depth: change one, and the secret must be given again
_TARGET_KEYS = ("url", "host", "port", "username")


def _target_changes(given: Any, stored: Any, prefix: str = "") -> list[str]:
    """The dotted names of the keys in :data:`_TARGET_KEYS` whose value ``given`` changes."""
    if not isinstance(given, dict) or not isinstance(stored, dict):
        return []
    changed = [
        f"{prefix}{key}"
        for key in _TARGET_KEYS
        if (key in given or key in stored) and _comparable(given.get(key)) != _comparable(stored.get(key))
    ]
    for key, value in given.items():
        if isinstance(value, dict):
            changed += _target_changes(value, stored.get(key), f"{prefix}{key}.")
    return changed


def _comparable(value: Any) -> str | None:
    # as validation normalises them: "104" is port 104, a URL's trailing slash is dropped
    return None if value is None else str(value).strip().rstrip("/")


def _secret_names(document: Any, prefix: str = "") -> list[str]:
    """The dotted names of the secrets ``document`` holds (non-empty)."""
    if not isinstance(document, dict):
        return []
    names = []
    for key, value in document.items():
        if is_secret_key(key) and value is not None and not key.startswith("has_"):
            names.append(f"{prefix}{key}")
        elif isinstance(value, dict):
            names += _secret_names(value, f"{prefix}{key}.")
    return names


def _stored_document(config: BaseModel) -> dict[str, Any]:
    """The configuration as JSON with its secrets in clear (stored; never returned)."""
    return {name: _plain(getattr(config, name)) for name in type(config).model_fields}


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return _stored_document(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Path):
        return str(value)
    return value


def _view(stored: StoredDestination) -> dict[str, Any]:
    try:
        public = CONFIG.validate_python(dict(stored.document)).public_view()
    except ValidationError:
        # stored by an older node, or a secret the key cannot open: name it without risking
        # a secret, and never answer 500
        public = {"name": stored.name, "invalid": True}
    if stored.unreadable_secrets:
        public["unreadable_secrets"] = list(stored.unreadable_secrets)
        public["problem"] = (
            f"{', '.join(stored.unreadable_secrets)} cannot be decrypted with this node's secrets "
            "key (the key file was lost or replaced): enter it again"
        )
    return {
        **public,
        "type": stored.type,
        "builtin": False,
        "created_at": to_iso(stored.created_at),
        "updated_at": to_iso(stored.updated_at),
    }


def _builtin_view() -> dict[str, Any]:
    return {**ThisOrthancConfig(type="this-orthanc").public_view(), "builtin": True}
