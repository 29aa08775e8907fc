"""Who may do what over HTTP: the decision behind the plugin's incoming-request filter.

Orthanc checks the basic-auth password (``AuthenticationEnabled``) and answers 401 before the
filter runs; the filter then decides by role, and this module is that decision, without Orthanc:

- ``GET``/``HEAD``: any known user.
- ``/ai/`` operations marked ``write`` in the route table: admins only, and only with the
  CSRF checks a browser app needs: an ``X-Requested-By`` header (a cross-site form cannot set
  one, and a cross-site script cannot without a CORS preflight Orthanc never grants) and, when
  the browser says where the request comes from (``Origin``, else ``Referer``), the same host
  and port as the request's ``Host``.
- Orthanc's own REST API (and DICOMweb): viewers may only read, so besides GET/HEAD only the
  POSTs that read (``/tools/find``, ``/tools/lookup``, archive and media downloads); admins may
  change anything, but a browser request from another origin is refused (Orthanc Explorer is
  same-origin; scripts send no Origin). STOW-RS (``POST /dicom-web/studies``) is a change.

The password is checked again against the credentials file, so a removed user or a replaced
password is refused at once, although Orthanc itself re-reads its users only on restart.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from node.credentials import Credentials, Role
from node.web.http import ApiResponse, Request
from node.web.routes import Operation, Route, RouteTable

READS = frozenset({"GET", "HEAD"})
CSRF_HEADER = "x-requested-by"
# POSTs on Orthanc's API that only read (search, or build a download): allowed to viewers.
_READ_ONLY_POSTS = re.compile(
    r"^/(tools/(find|lookup|create-archive|create-media|create-media-extended)"
    r"|(patients|studies|series)/[^/]+/(archive|media))/?$"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: why, for the log (no patient data: method, path and user only)
    reason: str


def basic_credentials(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic`` header; None if absent or malformed."""
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, colon, password = decoded.partition(":")
    return (name, password) if colon else None


class AccessPolicy:
    def __init__(
        self,
        routes: RouteTable,
        credentials: Callable[[], Credentials],
        *,
        authentication: bool = True,
    ) -> None:
        self.routes = routes
        self._credentials = credentials
        self.authentication = authentication

    def identify(self, headers: Mapping[str, str]) -> Identity | None:
        """The authenticated user, or None. Without authentication (an auth proxy in front),
        every request is an admin's: the proxy decided who may reach the node."""
        if not self.authentication:
            return Identity("anonymous", Role.ADMIN)
        pair = basic_credentials(headers)
        if pair is None:
            return None
        user = self._credentials().check(*pair)
        return None if user is None else Identity(user.name, user.role)

    def decide(self, method: str, uri: str, headers: Mapping[str, str]) -> Decision:
        """``headers`` with lower-case names; ``uri`` without its query string."""
        method = method.upper()
        identity = self.identify(headers)
        if identity is None:
            return Decision(False, f"{method} {uri}: unknown user or wrong password")
        who = f"user {identity.name} ({identity.role})"
        if method in READS:
            return Decision(True, f"{method} {uri}: {who} may read")
        if uri.startswith("/ai/"):
            operation = self.routes.operation(method, uri)
            if operation is None or not operation.write:
                # No such operation (Orthanc answers 404/405) or one that only reads.
                return Decision(True, f"{method} {uri}: reads, allowed to {who}")
            if identity.role is not Role.ADMIN:
                return Decision(False, f"{method} {uri}: changes the node; {who} may not")
            if not headers.get(CSRF_HEADER, "").strip():
                return Decision(False, f"{method} {uri}: no X-Requested-By header (CSRF check)")
            problem = _cross_origin(headers)
            if problem:
                return Decision(False, f"{method} {uri}: {problem} (CSRF check)")
            return Decision(True, f"{method} {uri}: {who} may change the node")
        if identity.role is not Role.ADMIN and not (method == "POST" and _READ_ONLY_POSTS.match(uri)):
            return Decision(False, f"{method} {uri}: changes Orthanc; {who} may not")
        problem = _cross_origin(headers)
        if problem:
            return Decision(False, f"{method} {uri}: {problem} (CSRF check)")
        return Decision(True, f"{method} {uri}: allowed to {who}")


def _cross_origin(headers: Mapping[str, str]) -> str | None:
    """Why the request comes from another site than the one it is sent to, or None if not
    (or if the client does not say: scripts send neither Origin nor Referer)."""
    host = headers.get("host", "")
    for name in ("origin", "referer"):
        value = headers.get(name)
        if value is None:
            continue
        origin = _netloc(value)
        if origin is None or origin != _host_and_port(host, value):
            return f"{name.capitalize()} {value!r} is not this node ({host or 'no Host header'})"
        return None
    return None


def _netloc(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None  # "null" (sandboxed or privacy-hidden origins) and non-web schemes
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        return None
    return (parts.hostname.lower(), port)


def _host_and_port(host: str, origin: str) -> tuple[str, int] | None:
    # The Host header has no scheme: a missing port is the default of the Origin's scheme.
    scheme = urlsplit(origin).scheme
    if scheme not in _DEFAULT_PORTS:
        return None
    return _netloc(f"{scheme}://{host}")


def access_routes(policy: AccessPolicy) -> list[Route]:
    """``GET /ai/me``: who the caller is and what they may do (the admin console hides what a
    viewer cannot change; the filter refuses it anyway)."""

    def me(request: Request) -> ApiResponse:
        identity = policy.identify(request.headers)
        if identity is None:
            return ApiResponse(401, {"error": "unknown user or wrong password"})
        return ApiResponse(200, {"user": identity.name, "role": identity.role.value})

    return [
        Route(
            "/ai/me",
            (
                Operation(
                    "GET",
                    me,
                    "The authenticated user and their role (admin may change, viewer only reads)",
                    response_schema={
                        "type": "object",
                        "required": ["user", "role"],
                        "properties": {
                            "user": {"type": "string"},
                            "role": {"type": "string", "enum": [role.value for role in Role]},
                        },
                    },
                ),
            ),
        )
    ]
