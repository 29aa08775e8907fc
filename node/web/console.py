"""The admin console: static files under ``/ai/ui/``, served from the package (``node/web/ui``).

Plain HTML, ES modules and CSS, no build step and nothing fetched from elsewhere. Every answer
carries headers for an admin page: a Content-Security-Policy that allows only this origin's
files (no inline script or style, no framing), ``nosniff``, ``X-Frame-Options: DENY``, a
same-origin referrer policy, and ``Cache-Control: no-cache`` so an upgraded node serves its new
console at once.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

from node.web.http import ApiResponse, Request
from node.web.routes import Operation, Route

#: where the console lives. Orthanc drops a trailing slash before it matches a route, so
#: ``/ai/ui`` and ``/ai/ui/`` reach the same handler and cannot redirect one to the other: both
#: answer the page, whose scripts and styles are therefore named from the root (/ai/ui/app.js).
PREFIX = "/ai/ui/"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def _files() -> Traversable:
    return resources.files("node.web").joinpath("ui")


def resolve(path: str, root: Traversable | None = None) -> Traversable | None:
    """The file under the console's folder that ``path`` (relative to /ai/ui/) names.

    None for anything that is not a plain relative path to an existing file with a known type:
    ``..``, ``.`` or empty segments inside the path, absolute paths, backslashes, NUL bytes,
    hidden files, folders.
    """
    root = _files() if root is None else root
    if path in ("", "/"):
        path = "index.html"
    if path.startswith("/") or "\\" in path or "\x00" in path or "%" in path:
        return None
    segments = path.split("/")
    if any(segment in ("", ".", "..") or segment.startswith(".") for segment in segments):
        return None
    if _suffix(segments[-1]) not in CONTENT_TYPES:
        return None
    found = root
    for segment in segments:
        found = found.joinpath(segment)
    return found if found.is_file() else None


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return "" if dot <= 0 else name[dot:].lower()


def serve(request: Request) -> ApiResponse:
    """GET /ai/ui/{path}: one file of the console, 404 for anything else."""
    path = request.groups[0] if request.groups else ""
    found = resolve(path)
    if found is None:
        return ApiResponse(404, {"error": f"no console file {path!r}"}, headers=dict(SECURITY_HEADERS))
    return ApiResponse(
        200,
        found.read_bytes(),
        content_type=CONTENT_TYPES[_suffix(found.name)],
        headers=dict(SECURITY_HEADERS),
    )


def console_routes() -> list[Route]:
    """The console's routes, for :func:`node.web.app.build_routes` to merge into the table."""
    return [
        Route(
            "/ai/ui",
            (Operation("GET", serve, "The admin console", response_media_type="text/html"),),
        ),
        Route(
            "/ai/ui/{path}",
            (
                Operation(
                    "GET",
                    serve,
                    "The admin console: its page, scripts and styles",
                    response_media_type="text/html",
                ),
            ),
        ),
    ]
