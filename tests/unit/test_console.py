"""The admin console's files as /ai/ui/ serves them: types, security headers, no path traversal."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from node.web.console import CONTENT_TYPES, console_routes, resolve, serve
from node.web.http import Request
from node.web.routes import RouteTable

UI = resources.files("node.web").joinpath("ui")


def _get(path: str):
    table = RouteTable(console_routes())
    found = table.find(path)
    assert found is not None, f"no console route for {path}"
    route, groups = found
    operation = route.operation("GET")
    assert operation is not None
    return operation.handler(Request("GET", path=path, groups=groups))


def test_the_console_root_serves_the_page_as_html() -> None:
    response = _get("/ai/ui/")

    assert response.status == 200
    assert response.content_type == "text/html; charset=utf-8"
    assert b'<script type="module" src="/ai/ui/app.js"></script>' in response.payload()


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/ai/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ai/ui/style.css", "text/css; charset=utf-8"),
        ("/ai/ui/pages/jobs.js", "text/javascript; charset=utf-8"),
        ("/ai/ui/index.html", "text/html; charset=utf-8"),
    ],
)
def test_each_file_has_its_content_type(path: str, content_type: str) -> None:
    response = _get(path)

    assert (response.status, response.content_type) == (200, content_type)


def test_every_answer_carries_the_security_headers() -> None:
    for path in ("/ai/ui/", "/ai/ui/missing.js"):
        headers = _get(path).headers

        policy = headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "'unsafe-inline'" not in policy
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["Cache-Control"] == "no-cache"


def test_ai_ui_without_a_slash_is_the_page_too() -> None:
    """Orthanc drops the trailing slash of /ai/ui/ before routing: both must answer the page."""
    response = _get("/ai/ui")

    assert (response.status, response.content_type) == (200, "text/html; charset=utf-8")
    assert b'src="/ai/ui/app.js"' in response.payload()


@pytest.mark.parametrize(
    "path",
    [
        "../console.py",
        "../../config.py",
        "pages/../../console.py",
        "/etc/passwd",
        "//etc/passwd",
        "..%2Fconsole.py",
        "pages\\..\\..\\console.py",
        "./index.html",
        ".hidden.js",
        "index.html\x00.js",
        "pages",
        "pages/",
        "../__init__.py",
    ],
)
def test_paths_outside_the_console_folder_are_refused(path: str) -> None:
    assert resolve(path) is None
    assert serve(Request("GET", path=f"/ai/ui/{path}", groups=(path,))).status == 404


def test_files_of_unknown_type_are_not_served() -> None:
    assert resolve("../console.py") is None
    assert resolve("README") is None


def test_a_missing_file_is_a_404_naming_it() -> None:
    response = _get("/ai/ui/nothing-here.js")

    assert response.status == 404
    assert "nothing-here.js" in response.body["error"]


def _console_files() -> list[str]:
    found = []
    for entry in UI.iterdir():
        if entry.is_file():
            found.append(entry.name)
        else:
            found.extend(f"{entry.name}/{child.name}" for child in entry.iterdir() if child.is_file())
    return sorted(found)


def test_every_console_file_has_a_known_type_and_is_served() -> None:
    files = _console_files()

    assert "index.html" in files and "app.js" in files
    for name in files:
        assert resolve(name) is not None, name
        assert "." + name.rsplit(".", 1)[-1] in CONTENT_TYPES


def test_the_page_has_no_inline_script_or_event_handler_the_policy_would_block() -> None:
    html = UI.joinpath("index.html").read_text()

    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None
    assert re.search(r"\son[a-z]+\s*=", html) is None
    assert re.search(r"\sstyle\s*=", html) is None


def test_no_script_writes_markup_from_strings() -> None:
    """Values reach the page as text (textContent, createElement), never parsed as HTML."""
    for name in _console_files():
        if name.endswith(".js"):
            text = UI.joinpath(name).read_text()
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
                assert sink not in text, f"{name} uses {sink}"


def test_every_request_goes_through_api_js() -> None:
    for name in _console_files():
        if name.endswith(".js") and name != "api.js":
            assert "fetch(" not in UI.joinpath(name).read_text(), f"{name} calls fetch() without api.js"
