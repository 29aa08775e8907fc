"""Who may do what over HTTP: the decision behind the plugin's incoming-request filter.

Orthanc checks the basic-auth password (``AuthenticationEnabled``) and answers 401 before the
filter runs; the filter then decides by role, and this module is that decision, without Orthanc:

- Orthanc turns ``GET ...?_method=delete`` and any request with an ``X-HTTP-Method-Override``
  header into a PUT or DELETE, so an ``<img>`` or a link could make a logged-in browser delete
  a study. The header is refused outright. The query argument never reaches the filter (it is
  handed a DELETE, without the GET's arguments), so the filter refuses what only such a
  faked request looks like: a write the browser sent as a page load or an image
  (``Sec-Fetch-Mode`` navigate/no-cors, ``Sec-Fetch-Dest`` other than empty), and a write from a
  browser (``User-Agent: Mozilla/...``) without ``Origin``, which every browser adds to the
  writes a script sends, so what lacks it is a load, an image or an old browser's form.
- A ``sender`` may store and do nothing else: STOW-RS (``POST /dicom-web/studies[/{uid}]``) and
  Orthanc's own upload (``POST /instances``, what an Orthanc peer sends). It reads nothing.
- A ``worker`` (a worker host's account in a cluster) may read and store results
  (``POST /instances``), nothing else.
- ``GET``/``HEAD``: any other known user.
- Every other request changes something unless it is known to only read, and a change needs
  the admin role (a sender's store aside) and must not come from another site (CSRF).
- Another site is recognised by what browsers send and scripts do not need to: since 2020
  every browser sends ``Sec-Fetch-Site`` (``cross-site``/``same-site`` for a page elsewhere,
  which is refused) and ``Origin`` on every cross-origin POST, PUT and DELETE, forms included
  (refused unless it is this node's own host and port; ``Referer`` stands in for a missing
  ``Origin``). A request with none of them is not a page's: a PACS, a modality, curl or
  dicomweb-client, which need no custom header.
- What only reads: under ``/ai/``, the operations of the route table not marked ``write``
  (testing a draft rule is marked so: it changes nothing, but runs what only an admin may write); on
  Orthanc's own API (and DICOMweb), the POSTs that search or build a download (``/tools/find``,
  ``/tools/lookup``, archive and media downloads). A path under ``/ai/`` that matches no
  operation is a change (fail closed: a path the filter does not recognise must not get past
  it). Orthanc's searches and downloads keep the cross-site check (a download of a study is
  patient data that a page elsewhere must not trigger); ``/ai/`` reads need none.

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
# Orthanc's method faking (HttpServer.cpp, ExtractMethod): the header on any request, the
# query argument on a GET.
METHOD_OVERRIDE_HEADER = "x-http-method-override"
# Sec-Fetch-Mode of what a page loads by itself (a link, a form, an image), not by script.
_LOADS = frozenset({"navigate", "nested-navigate", "no-cors", "websocket"})
# POSTs on Orthanc's API that only read (search, or build a download): allowed to viewers.
_READ_ONLY_POSTS = re.compile(
    r"^/(tools/(find|lookup|create-archive|create-media|create-media-extended)"
    r"|(patients|studies|series)/[^/]+/(archive|media))/?$"
)
# What a sender may do: store. STOW-RS to the server or to one study, Orthanc's own upload.
_STORES = re.compile(r"^/(dicom-web/studies(/[^/]+)?|instances)/?$")
# What a worker host's user may store: result objects, through Orthanc's upload.
_WORKER_STORES = re.compile(r"^/instances/?$")
# Sec-Fetch-Site values of a request the user made on this node's own pages (or typed).
_OWN_SITE = frozenset({"same-origin", "none"})
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
    ) -> Decision:
        """``method`` as Orthanc computed it (faking applied), ``headers`` with lower-case
        names, ``uri`` without its query string."""
        method = method.upper()
        identity = self.identify(headers)
        if identity is None:
            return Decision(False, f"{method} {uri}: unknown user or wrong password")
        who = f"user {identity.name} ({identity.role})"
        # Before anything else: with a faked method, ``method`` is already Orthanc's PUT or
        # DELETE, but refusing the faking itself needs no reasoning about what it would do.
        if METHOD_OVERRIDE_HEADER in headers:
            return Decision(False, f"{method} {uri}: the HTTP method is overridden; refused")
        path = orthanc_path(uri)
        if identity.role is Role.SENDER:
            return self._decide_store(method, uri, path, headers, who)
        if identity.role is Role.WORKER:
            return self._decide_worker(method, uri, path, headers, who)
        if method in READS:
            return Decision(True, f"{method} {uri}: {who} may read")
        node = path == "/ai" or path.startswith("/ai/")
        if node:
            operation = self.routes.operation(method, path)
            reads = operation is not None and not operation.write
            changes = "changes the node" if operation is not None else "is no operation that only reads"
            problem = None if operation is None else body_problem(operation, headers)
            if problem:
                return Decision(False, f"{method} {uri}: {problem}")
        else:
            reads = method == "POST" and _READ_ONLY_POSTS.match(path) is not None
            changes = "changes Orthanc"
        if reads:
            # Orthanc's searches and downloads keep their same-site check; /ai/ reads need none.
            problem = None if node else cross_site(headers)
            if problem:
                return Decision(False, f"{method} {uri}: {problem} (CSRF check)")
            return Decision(True, f"{method} {uri}: reads, allowed to {who}")
        if identity.role is not Role.ADMIN:
            return Decision(False, f"{method} {uri}: {changes}; {who} may not")
        problem = cross_site(headers)
        if problem:
            return Decision(False, f"{method} {uri}: {problem} (CSRF check)")
        return Decision(True, f"{method} {uri}: {who} may change {'the node' if node else 'Orthanc'}")

    @staticmethod
    def _decide_store(method: str, uri: str, path: str, headers: Mapping[str, str], who: str) -> Decision:
        if method != "POST" or _STORES.match(path) is None:
            return Decision(False, f"{method} {uri}: {who} may only store (STOW-RS, POST /instances)")
        problem = cross_site(headers)
        if problem:
            return Decision(False, f"{method} {uri}: {problem} (CSRF check)")
        return Decision(True, f"{method} {uri}: {who} may store")

    @staticmethod
    def _decide_worker(method: str, uri: str, path: str, headers: Mapping[str, str], who: str) -> Decision:
        # what a worker host does with an Orthanc: read a study, store its results
        if method in READS:
            return Decision(True, f"{method} {uri}: {who} may read")
        if method == "POST" and _WORKER_STORES.match(path) is not None and not cross_site(headers):
            return Decision(True, f"{method} {uri}: {who} may store results")
        return Decision(False, f"{method} {uri}: {who} may only read and store results (POST /instances)")


def body_problem(operation: Operation, headers: Mapping[str, str]) -> str | None:
    """Why an /ai/ operation must not take this request's body, judged from its headers: the
    filter runs before Orthanc reads the body, so a body too large never reaches memory."""
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        # Orthanc would take the form apart, call the plug-in once per part without the
        # request's headers, and answer 200 itself: refused rather than silently lost
        return "Orthanc splits multipart/form-data bodies; send application/dicom or multipart/related"
    length = headers.get("content-length")
    if length is None:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return "a chunked body without Content-Length; send Content-Length"
        return None
    try:
        size = int(length)
    except ValueError:
        return f"Content-Length {length!r} is not a number"
    if size > operation.max_body:
        return f"the body is {size} bytes; this operation takes at most {operation.max_body}"
    return None


def cross_site(headers: Mapping[str, str]) -> str | None:
    """Why a browser sent this request from a page of another site, or as a page load or an
    image (a faked method), or None if it did not (or if no browser sent it: scripts and
    DICOMweb clients send none of these headers)."""
    fetch_site = headers.get("sec-fetch-site", "").strip().lower()
    if fetch_site and fetch_site not in _OWN_SITE:
        return f"Sec-Fetch-Site is {fetch_site!r}: sent from a page of another site"
    mode = headers.get("sec-fetch-mode", "").strip().lower()
    destination = headers.get("sec-fetch-dest", "empty").strip().lower()
    if mode in _LOADS or destination != "empty":
        return f"the browser sent it to load {destination!r} ({mode or 'no mode'}), not from a script"
    if "origin" not in headers and headers.get("user-agent", "").startswith("Mozilla/"):
        return "a browser sent it without Origin: a page load or an image, not a script"
    return _cross_origin(headers)


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
