"""The node's users: a JSON file in the data folder, mode 600, shared by Orthanc and the node.

Orthanc's basic authentication needs the passwords themselves (``RegisteredUsers`` in its
configuration), so they are stored as they are, readable by the node's own OS user only.
The file holds:

- ``admin`` (role admin), created with a random password on the node's first start; the
  password is printed once, then lives only here;
- two internal users that are never printed: ``ai-node`` (acts as admin) for the node's own
  processes (workers, CLI, the supervisor's health wait) and ``ai-node-viewer`` (viewer role)
  for the OHIF proxy, so the viewer page can read studies but change nothing;
- users added with ``ai-node users add NAME --role admin|viewer``.

Orthanc reads ``RegisteredUsers`` at start only, so a new user or a new password works after a
restart; the access filter re-reads this file whenever it changes, so a removed user or a
replaced password is refused at once.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from node.config import Settings
from node.errors import ConfigurationError
from node.support.private import write_private

FILE_NAME = "credentials.json"
ADMIN_USER = "admin"
SERVICE_USER = "ai-node"
VIEWER_PROXY_USER = "ai-node-viewer"
# Basic authentication splits at the first colon, and Orthanc's configuration keys are plain
# strings: keep names to a conservative set.
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class Role(StrEnum):
    #: may change rules, destinations, jobs and Orthanc's data
    ADMIN = "admin"
    #: reads everything, changes nothing
    VIEWER = "viewer"
    #: may store studies over HTTP (STOW-RS, Orthanc's POST /instances) and nothing else: the
    #: account a modality or PACS pushes with, which cannot read what others sent
    SENDER = "sender"
    #: a worker host's account on the cluster's Orthancs: reads studies, stores results (POST
    #: /instances) and nothing else (docs/scaling.md)
    WORKER = "worker"


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password: str = field(repr=False)
    #: created by the node for its own processes; never printed, cannot be removed
    internal: bool = False

    def basic_auth(self) -> tuple[str, str]:
        return (self.name, self.password)

    def authorization_header(self) -> str:
        return basic_authorization(self.basic_auth())


def basic_authorization(auth: tuple[str, str]) -> str:
    """The HTTP Authorization header value for a basic-auth (name, password) pair."""
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
    return f"Basic {token}"


def valid_user_name(name: str) -> str:
    if not _USER_NAME.match(name):
        raise ConfigurationError(
            f"user name {name!r} is not valid: use 1-64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def new_password() -> str:
    return secrets.token_urlsafe(18)


@dataclass(frozen=True)
class Credentials:
    users: Mapping[str, User]

    def check(self, name: str, password: str) -> User | None:
        """The user if ``password`` is theirs (compared in constant time), else None."""
        user = self.users.get(name)
        if user is None:
            # Compare anyway so an unknown name takes as long as a wrong password.
            hmac.compare_digest(password.encode(), password.encode())
            return None
        return user if hmac.compare_digest(user.password.encode(), password.encode()) else None

    @property
    def service(self) -> User:
        return self._internal(SERVICE_USER)

    @property
    def viewer_proxy(self) -> User:
        return self._internal(VIEWER_PROXY_USER)

    def _internal(self, name: str) -> User:
        try:
            return self.users[name]
        except KeyError:
            raise ConfigurationError(f"the credentials file has no internal user {name!r}") from None

    def registered_users(self) -> dict[str, str]:
        """Orthanc's ``RegisteredUsers``."""
        return {user.name: user.password for user in self.users.values()}

    def with_user(self, user: User) -> Credentials:
        return Credentials({**self.users, user.name: user})

    def without_user(self, name: str) -> Credentials:
        return Credentials({key: user for key, user in self.users.items() if key != name})

    def to_json(self) -> dict[str, object]:
        return {
            "users": [
                {"name": u.name, "role": u.role.value, "password": u.password, "internal": u.internal}
                for u in self.users.values()
            ]
        }


def credentials_path(settings: Settings) -> Path:
    return settings.resolved_data_dir / FILE_NAME


def load_credentials(path: Path) -> Credentials:
    try:
        data = json.loads(path.read_text())
        users = {}
        for entry in data["users"]:
            user = User(
                name=valid_user_name(str(entry["name"])),
                role=Role(entry["role"]),
                password=str(entry["password"]),
                internal=bool(entry.get("internal", False)),
            )
            users[user.name] = user
    except FileNotFoundError:
        raise ConfigurationError(
            f"the node's credentials file {path} does not exist: start the node once "
            "(`ai-node start`), which creates it"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigurationError(f"the node's credentials file {path} is not valid: {error}") from error
    return Credentials(users)


def save_credentials(path: Path, credentials: Credentials) -> None:
    """Write the file atomically, mode 600 from the first byte (never briefly world-readable)."""
    write_private(path, json.dumps(credentials.to_json(), indent=2) + "\n")


def ensure_credentials(path: Path) -> tuple[Credentials, User | None]:
    """The node's users; on first use, create them. Returns the new admin user if one was made,
    so the caller can show its password once."""
    if path.exists():
        credentials = load_credentials(path)
        missing = [
            User(SERVICE_USER, Role.ADMIN, new_password(), internal=True),
            User(VIEWER_PROXY_USER, Role.VIEWER, new_password(), internal=True),
        ]
        added = [user for user in missing if user.name not in credentials.users]
        for user in added:
            credentials = credentials.with_user(user)
        if added:
            save_credentials(path, credentials)
        return credentials, None
    admin = User(ADMIN_USER, Role.ADMIN, new_password())
    credentials = Credentials(
        {
            admin.name: admin,
            SERVICE_USER: User(SERVICE_USER, Role.ADMIN, new_password(), internal=True),
            VIEWER_PROXY_USER: User(VIEWER_PROXY_USER, Role.VIEWER, new_password(), internal=True),
        }
    )
    save_credentials(path, credentials)
    return credentials, admin


def add_user(path: Path, name: str, role: Role) -> User:
    credentials, _ = ensure_credentials(path)
    if valid_user_name(name) in credentials.users:
        raise ConfigurationError(f"user {name!r} exists already; `ai-node users reset-password {name}`")
    user = User(name, role, new_password())
    save_credentials(path, credentials.with_user(user))
    return user


def remove_user(path: Path, name: str) -> None:
    credentials = load_credentials(path)
    user = credentials.users.get(name)
    if user is None:
        raise ConfigurationError(f"there is no user {name!r}")
    if user.internal:
        raise ConfigurationError(f"user {name!r} is the node's own; it cannot be removed")
    admins = [u for u in credentials.users.values() if u.role is Role.ADMIN and not u.internal]
    if user.role is Role.ADMIN and len(admins) == 1:
        raise ConfigurationError(f"user {name!r} is the last admin; add another admin first")
    save_credentials(path, credentials.without_user(name))


#: what ``ai-node users reset-password`` must tell: the filter refuses the old password at once,
#: Orthanc knows only the old one until it restarts, so the user is locked out until then
RESET_PASSWORD_NOTE = (
    "{name} cannot log in until the node restarts (`ai-node stop`, then `ai-node start`): "
    "the old password is refused from now on, and Orthanc accepts the new one only after a restart."
)


def reset_password(path: Path, name: str) -> User:
    """A new random password for ``name``. Until the node restarts the user cannot log in at all
    (see RESET_PASSWORD_NOTE); the node's internal users are refused."""
    credentials = load_credentials(path)
    user = credentials.users.get(name)
    if user is None:
        raise ConfigurationError(f"there is no user {name!r}")
    if user.internal:
        # The filter would refuse the node's own processes (or the viewer proxy) at once, while
        # Orthanc keeps the old password until it restarts: nothing could log in as them.
        raise ConfigurationError(f"user {name!r} is the node's own; its password cannot be reset")
    changed = replace(user, password=new_password())
    save_credentials(path, credentials.with_user(changed))
    return changed


class CredentialsFile:
    """The file's current content, read again only when it changed (the access filter runs on
    every HTTP request)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._credentials = Credentials({})

    def current(self) -> Credentials:
        try:
            status = self.path.stat()
        except FileNotFoundError:
            return Credentials({})
        # save_credentials replaces the file (os.replace): a new inode, even when a rewrite in
        # the same clock tick keeps the mtime and the size (a reset password has the same length).
        stamp = (status.st_ino, status.st_mtime_ns, status.st_size)
        if stamp != self._stamp:
            self._credentials = load_credentials(self.path)
            self._stamp = stamp
        return self._credentials


def service_auth(settings: Settings) -> tuple[str, str] | None:
    """Basic-auth pair of the node's service user, for the node's own HTTP clients; None when
    authentication is off and there is no credentials file."""
    remote = settings.cluster.orthanc
    if settings.cluster.role == "worker" and remote is not None:
        # a worker host has no Orthanc and no credentials file: its own user, given to it
        return (remote.user, read_password_file(remote.password_file))
    credentials = _internal_credentials(settings)
    return None if credentials is None else credentials.service.basic_auth()


def read_password_file(path: Path) -> str:
    """A password kept in a file of its own (the first line), refused if others may read it."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as error:
        raise ConfigurationError(f"cannot read the password file {path}: {error.strerror}") from error
    if mode & 0o077:
        raise ConfigurationError(
            f"the password file {path} may be read by other accounts (mode {mode & 0o777:o}); "
            f"make it private: chmod 600 {path}"
        )
    password = text.splitlines()[0].strip() if text.strip() else ""
    if not password:
        raise ConfigurationError(f"the password file {path} is empty")
    return password


def viewer_auth(settings: Settings) -> tuple[str, str] | None:
    """Basic-auth pair of the node's read-only user, for the viewer's proxy; None as for
    :func:`service_auth`."""
    credentials = _internal_credentials(settings)
    return None if credentials is None else credentials.viewer_proxy.basic_auth()


def _internal_credentials(settings: Settings) -> Credentials | None:
    path = credentials_path(settings)
    if not path.exists() and not settings.orthanc.authentication:
        return None
    return load_credentials(path)
