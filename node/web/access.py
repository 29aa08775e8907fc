"""Who may do what over HTTP: the decision behind the plugin's incoming-request filter.

Orthanc checks the basic-auth password (``AuthenticationEnabled``) and answers 401 before the
filter runs; the filter then decides by role, and this module is that decision, without Orthanc:

- A request that fakes its method is refused: Orthanc turns ``GET ...?_method=delete`` and any
  request with an ``X-HTTP-Method-Override`` header into a PUT or DELETE, which an ``<img>`` on
  another site could otherwise make a logged-in browser send (with no Origin or Referer).
- ``GET``/``HEAD``: any known user.
- Every other request changes something unless it is known to only read, and a change needs
  the admin role and the CSRF checks a browser app needs: an ``X-Requested-By`` header (a
  cross-site form or image cannot set one, and a cross-site script cannot without a CORS
  preflight Orthanc never grants) and, when the browser says where the request comes from
  (``Origin``, else ``Referer``), the same host and port as the request's ``Host``.
- What only reads: under ``/ai/``, the operations of the route table not marked ``write``
  (testing a draft rule is marked so: it changes nothing, but runs what only an admin may write); on
  Orthanc's own API (and DICOMweb), the POSTs that search or build a download (``/tools/find``,
  ``/tools/lookup``, archive and media downloads), which a cross-origin browser may not send.
  A path under ``/ai/`` that matches no operation is a change (fail closed: a path the filter
  does not recognise must not get past it). STOW-RS (``POST /dicom-web/studies``) is a change.
- On Orthanc's own API, ``X-Requested-With`` (which jQuery, and so Orthanc Explorer, sends on
  every request to its own site) counts as the CSRF header too: a cross-site page cannot set
  it either.

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
from node.web.routes import Operation, Route, RouteTable, orthanc_path

READS = frozenset({"GET", "HEAD"})
CSRF_HEADER = "x-requested-by"
# Orthanc Explorer (jQuery) sends this one on its own writes (delete, modify, upload).
ORTHANC_CSRF_HEADERS = (CSRF_HEADER, "x-requested-with")
# Orthanc's method faking (HttpServer.cpp, ExtractMethod): the header on any request, the
# query argument on a GET.
METHOD_OVERRIDE_HEADER = "x-http-method-override"
METHOD_OVERRIDE_ARGUMENT = "_method"
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

    def decide(
        self,
        method: str,
        uri: str,
        headers: Mapping[str, str],
        arguments: Mapping[str, str] | None = None,
    ) -> Decision:
        """``headers`` with lower-case names; ``uri`` without its query string, whose arguments
        (Orthanc parses them for a GET only) are ``arguments``."""
        method = method.upper()
        identity = self.identify(headers)
        if identity is None:
            return Decision(False, f"{method} {uri}: unknown user or wrong password")
        who = f"user {identity.name} ({identity.role})"
        # Before anything else: with a faked method, ``method`` is already Orthanc's PUT or
        # DELETE, but refusing the faking itself needs no reasoning about what it would do.
        if METHOD_OVERRIDE_HEADER in headers or METHOD_OVERRIDE_ARGUMENT in (arguments or {}):
            return Decision(False, f"{method} {uri}: the HTTP method is overridden; refused")
        if method in READS:
            return Decision(True, f"{method} {uri}: {who} may read")
        path = orthanc_path(uri)
        node = path == "/ai" or path.startswith("/ai/")
        if node:
            operation = self.routes.operation(method, path)
            reads = operation is not None and not operation.write
            changes = "changes the node" if operation is not None else "is no operation that only reads"
            csrf_headers: tuple[str, ...] = (CSRF_HEADER,)
        else:
            reads = method == "POST" and _READ_ONLY_POSTS.match(path) is not None
            changes = "changes Orthanc"
            csrf_headers = ORTHANC_CSRF_HEADERS
        if reads:
            # Orthanc's searches and downloads keep their same-origin check; /ai/ reads need none.
            problem = None if node else _cross_origin(headers)
            if problem:
                return Decision(False, f"{method} {uri}: {problem} (CSRF check)")
            return Decision(True, f"{method} {uri}: reads, allowed to {who}")
        if identity.role is not Role.ADMIN:
            return Decision(False, f"{method} {uri}: {changes}; {who} may not")
        if not any(headers.get(name, "").strip() for name in csrf_headers):
            return Decision(False, f"{method} {uri}: no X-Requested-By header (CSRF check)")
        problem = _cross_origin(headers)
        if problem:
            return Decision(False, f"{method} {uri}: {problem} (CSRF check)")
        return Decision(True, f"{method} {uri}: {who} may change {'the node' if node else 'Orthanc'}")


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


def access_routes(policy: AccessPolicy | None) -> list[Route]:
    """``GET /ai/me``: who the caller is and what they may do (the admin console hides what a
    viewer cannot change; the filter refuses it anyway). Without a policy (no authentication,
    or a table built outside the plugin) the caller is the anonymous admin, as the filter
    would decide without authentication."""

    def me(request: Request) -> ApiResponse:
        identity = Identity("anonymous", Role.ADMIN) if policy is None else policy.identify(request.headers)
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
