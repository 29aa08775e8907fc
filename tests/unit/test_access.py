"""The access decision behind the plugin's incoming-request filter: roles × methods × CSRF."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from node.credentials import (
    Credentials,
    CredentialsFile,
    Role,
    User,
    add_user,
    ensure_credentials,
    load_credentials,
    remove_user,
    reset_password,
)
from node.errors import ConfigurationError
from node.web.access import AccessPolicy, access_routes, basic_credentials
from node.web.http import ApiResponse, Request
from node.web.routes import Operation, Route, RouteTable

HOST = "127.0.0.1:8042"
USERS = Credentials(
    {
        "admin": User("admin", Role.ADMIN, "admin-pw"),
        "ann": User("ann", Role.VIEWER, "viewer-pw"),
        "ai-node": User("ai-node", Role.ADMIN, "service-pw", internal=True),
        "modality": User("modality", Role.SENDER, "sender-pw"),
    }
)


def _ok(request: Request) -> ApiResponse:
    return ApiResponse(200, {})


ROUTES = RouteTable(
    [
        Route("/ai/jobs", (Operation("GET", _ok, "jobs"),)),
        Route("/ai/jobs/{job_id}/retry", (Operation("POST", _ok, "retry", write=True),)),
        Route("/ai/rules/test", (Operation("POST", _ok, "test a rule"),)),
        Route(
            "/ai/rules/{name}",
            (
                Operation("GET", _ok, "rule"),
                Operation("PUT", _ok, "change", write=True),
                Operation("DELETE", _ok, "delete", write=True),
            ),
        ),
    ]
)


def _policy(*, authentication: bool = True) -> AccessPolicy:
    return AccessPolicy(ROUTES, lambda: USERS, authentication=authentication)


def _headers(user: str | None = "admin", password: str | None = None, **extra: str) -> dict[str, str]:
    passwords = {"admin": "admin-pw", "ann": "viewer-pw", "ai-node": "service-pw", "modality": "sender-pw"}
    headers = {"host": HOST, **{name.replace("_", "-"): value for name, value in extra.items()}}
    if user is not None:
        secret = password if password is not None else passwords.get(user, "x")
        headers["authorization"] = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
    return headers


WRITE = {"x_requested_by": "tests"}


@pytest.mark.parametrize("user", ["admin", "ann", "ai-node"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_every_known_user_may_read(user: str, method: str) -> None:
    assert _policy().decide(method, "/ai/jobs", _headers(user)).allowed


def test_an_unknown_user_is_refused() -> None:
    decision = _policy().decide("GET", "/ai/jobs", _headers("mallory"))
    assert (decision.allowed, decision.reason) == (False, "GET /ai/jobs: unknown user or wrong password")


def test_a_wrong_password_is_refused_even_for_a_read() -> None:
    assert not _policy().decide("GET", "/ai/jobs", _headers("admin", "old-password")).allowed


def test_a_request_without_credentials_is_refused() -> None:
    assert not _policy().decide("GET", "/ai/jobs", _headers(None)).allowed


@pytest.mark.parametrize("user", ["admin", "ai-node"])
def test_admins_and_the_service_user_may_change_the_node(user: str) -> None:
    assert _policy().decide("POST", "/ai/jobs/3/retry", _headers(user, **WRITE)).allowed


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/ai/jobs/3/retry"), ("PUT", "/ai/rules/ct"), ("DELETE", "/ai/rules/ct")]
)
def test_a_viewer_may_not_change_the_node(method: str, path: str) -> None:
    decision = _policy().decide(method, path, _headers("ann", **WRITE))
    assert not decision.allowed
    assert decision.reason == f"{method} {path}: changes the node; user ann (viewer) may not"


def test_a_viewer_may_post_to_an_operation_that_only_reads() -> None:
    assert _policy().decide("POST", "/ai/rules/test", _headers("ann")).allowed


def test_a_script_s_write_needs_no_custom_header() -> None:
    # curl, a PACS or dicomweb-client: no Origin, no Referer, no Sec-Fetch-* headers
    assert _policy().decide("POST", "/ai/jobs/3/retry", _headers("admin")).allowed


@pytest.mark.parametrize("site", ["cross-site", "same-site", "Cross-Site"])
def test_a_write_a_browser_sends_from_another_site_is_refused(site: str) -> None:
    decision = _policy().decide("POST", "/ai/jobs/3/retry", _headers("admin", sec_fetch_site=site, **WRITE))
    assert (decision.allowed, decision.reason) == (
        False,
        f"POST /ai/jobs/3/retry: Sec-Fetch-Site is {site.lower()!r}: "
        "sent from a page of another site (CSRF check)",
    )


@pytest.mark.parametrize("site", ["same-origin", "none"])
def test_a_write_from_the_node_s_own_pages_is_allowed(site: str) -> None:
    headers = _headers("admin", sec_fetch_site=site, origin=f"http://{HOST}")
    assert _policy().decide("POST", "/ai/jobs/3/retry", headers).allowed


def test_a_cross_site_form_post_is_refused_even_if_the_browser_sends_no_sec_fetch_site() -> None:
    # browsers send Origin on every cross-origin POST, forms included
    headers = _headers(
        "admin", origin="http://evil.example", content_type="application/x-www-form-urlencoded"
    )
    assert not _policy().decide("POST", "/ai/jobs/3/retry", headers).allowed


def test_a_same_origin_sec_fetch_site_does_not_excuse_a_foreign_origin() -> None:
    headers = _headers("admin", sec_fetch_site="same-origin", origin="http://evil.example")
    assert not _policy().decide("POST", "/ai/jobs/3/retry", headers).allowed


def test_a_write_from_a_foreign_origin_is_refused() -> None:
    decision = _policy().decide(
        "POST", "/ai/jobs/3/retry", _headers("admin", origin="http://evil.example", **WRITE)
    )
    assert not decision.allowed
    assert "Origin 'http://evil.example' is not this node (127.0.0.1:8042)" in decision.reason


def test_a_write_from_the_same_origin_is_allowed() -> None:
    headers = _headers("admin", origin=f"http://{HOST}", **WRITE)
    assert _policy().decide("POST", "/ai/jobs/3/retry", headers).allowed


def test_a_write_from_another_port_of_the_same_host_is_refused() -> None:
    headers = _headers("admin", origin="http://127.0.0.1:3000", **WRITE)
    assert not _policy().decide("POST", "/ai/jobs/3/retry", headers).allowed


def test_a_null_origin_is_refused() -> None:
    assert not _policy().decide("POST", "/ai/jobs/3/retry", _headers("admin", origin="null", **WRITE)).allowed


def test_default_ports_compare_equal() -> None:
    headers = {**_headers("admin", origin="https://pacs.example", **WRITE), "host": "pacs.example:443"}
    assert _policy().decide("POST", "/ai/jobs/3/retry", headers).allowed


def test_without_origin_the_referer_is_checked() -> None:
    foreign = _headers("admin", referer="http://evil.example/page", **WRITE)
    same = _headers("admin", referer=f"http://{HOST}/ai/ui/rules", **WRITE)
    assert not _policy().decide("POST", "/ai/jobs/3/retry", foreign).allowed
    assert _policy().decide("POST", "/ai/jobs/3/retry", same).allowed


def test_the_origin_wins_over_the_referer() -> None:
    headers = _headers("admin", origin=f"http://{HOST}", referer="http://evil.example/", **WRITE)
    assert _policy().decide("POST", "/ai/jobs/3/retry", headers).allowed


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/studies/abc"),
        ("POST", "/instances"),
        ("PUT", "/tools/log-level"),
        ("POST", "/tools/execute-script"),
        ("POST", "/modalities/pacs/store"),
        ("POST", "/dicom-web/studies"),
    ],
)
def test_a_viewer_may_not_change_orthanc(method: str, path: str) -> None:
    decision = _policy().decide(method, path, _headers("ann"))
    assert not decision.allowed
    assert decision.reason == f"{method} {path}: changes Orthanc; user ann (viewer) may not"


@pytest.mark.parametrize(
    "path", ["/tools/find", "/tools/lookup", "/studies/abc/archive", "/tools/create-archive"]
)
def test_a_viewer_may_search_and_download_from_orthanc(path: str) -> None:
    assert _policy().decide("POST", path, _headers("ann")).allowed


@pytest.mark.parametrize(("method", "path"), [("DELETE", "/studies/abc"), ("POST", "/instances")])
def test_an_admin_change_to_orthanc_from_a_page_elsewhere_is_refused(method: str, path: str) -> None:
    decision = _policy().decide(method, path, _headers("admin", sec_fetch_site="cross-site"))
    assert not decision.allowed
    assert _policy().decide(method, path, _headers("admin")).allowed
    # Orthanc Explorer, on the node's own origin
    explorer = _headers("admin", sec_fetch_site="same-origin", origin=f"http://{HOST}")
    assert _policy().decide(method, path, explorer).allowed


def test_a_download_from_orthanc_triggered_by_a_page_elsewhere_is_refused() -> None:
    headers = _headers("ann", sec_fetch_site="cross-site")
    assert not _policy().decide("POST", "/studies/abc/archive", headers).allowed


def test_an_admin_change_to_orthanc_from_a_foreign_origin_is_refused() -> None:
    headers = _headers("admin", origin="http://evil.example")
    assert not _policy().decide("DELETE", "/studies/abc", headers).allowed


def test_without_authentication_everyone_is_an_admin_but_csrf_checks_stay() -> None:
    policy = _policy(authentication=False)
    elsewhere = {"host": HOST, "sec-fetch-site": "cross-site"}
    assert policy.decide("DELETE", "/studies/abc", {"host": HOST}).allowed
    assert not policy.decide("DELETE", "/studies/abc", elsewhere).allowed
    assert policy.decide("POST", "/ai/jobs/3/retry", {"host": HOST}).allowed
    assert not policy.decide("POST", "/ai/jobs/3/retry", elsewhere).allowed


# A sender stores and does nothing else.


@pytest.mark.parametrize(
    "path", ["/dicom-web/studies", "/dicom-web/studies/1.2.3", "/instances", "/instances/"]
)
def test_a_sender_may_store(path: str) -> None:
    decision = _policy().decide("POST", path, _headers("modality"))
    assert (decision.allowed, decision.reason) == (True, f"POST {path}: user modality (sender) may store")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/ai/jobs"),
        ("GET", "/dicom-web/studies"),
        ("GET", "/studies"),
        ("HEAD", "/ai/me"),
        ("POST", "/tools/find"),
        ("POST", "/ai/rules/test"),
        ("POST", "/ai/jobs/3/retry"),
        ("DELETE", "/studies/abc"),
        ("PUT", "/dicom-web/studies"),
        ("POST", "/dicom-web/studies/1.2.3/series"),
        ("POST", "/modalities/pacs/store"),
    ],
)
def test_a_sender_may_do_nothing_else(method: str, path: str) -> None:
    decision = _policy().decide(method, path, _headers("modality"))
    assert (decision.allowed, decision.reason) == (
        False,
        f"{method} {path}: user modality (sender) may only store (STOW-RS, POST /instances)",
    )


def test_a_sender_s_store_from_a_page_elsewhere_is_refused() -> None:
    assert (
        not _policy()
        .decide("POST", "/dicom-web/studies", _headers("modality", origin="http://evil.example"))
        .allowed
    )


# Paths as Orthanc routes them: the filter must not miss an operation Orthanc will call.


@pytest.mark.parametrize(
    "path",
    [
        "/ai/rules/ct/",  # Orthanc drops a trailing slash
        "/ai/rules//ct",  # Orthanc answers 400 before the filter; refused anyway
        "//ai/rules/ct//",
        "/ai/rules%2Fct",  # the web server decodes %2F before Orthanc; if not, no route: refused
        "/ai/Rules/ct",  # Orthanc lower-cases nothing: no route, but not a read either
        "/ai/no-such-route",
        "/ai",
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_a_viewer_may_not_change_the_node_through_any_spelling_of_a_path(method: str, path: str) -> None:
    assert not _policy().decide(method, path, _headers("ann", **WRITE)).allowed


@pytest.mark.parametrize("path", ["/ai/rules/ct/", "/ai/rules//ct", "/ai/no-such-route", "/ai/rules%2Fct"])
def test_an_admin_write_to_any_spelling_of_an_ai_path_needs_the_csrf_checks(path: str) -> None:
    assert not _policy().decide("DELETE", path, _headers("admin", sec_fetch_site="cross-site")).allowed
    foreign = _headers("admin", origin="http://evil.example", **WRITE)
    assert not _policy().decide("DELETE", path, foreign).allowed
    assert _policy().decide("DELETE", path, _headers("admin", **WRITE)).allowed


def test_the_reported_trailing_slash_bypass_is_closed() -> None:
    headers = _headers("ann", origin="http://evil.example")
    decision = _policy().decide("DELETE", "/ai/rules/x/", headers)
    assert (decision.allowed, decision.reason) == (
        False,
        "DELETE /ai/rules/x/: changes the node; user ann (viewer) may not",
    )


@pytest.mark.parametrize("path", ["/AI/rules/ct", "/Studies/abc", "/studies/abc/"])
def test_other_spellings_of_orthanc_paths_are_changes_to_orthanc(path: str) -> None:
    assert not _policy().decide("DELETE", path, _headers("ann", **WRITE)).allowed
    assert not _policy().decide("DELETE", path, _headers("admin", origin="http://evil.example")).allowed


@pytest.mark.parametrize("path", ["/ai/rules/test/", "/tools/find/", "/studies/abc/archive/"])
def test_a_read_only_post_with_a_trailing_slash_is_still_a_read(path: str) -> None:
    assert _policy().decide("POST", path, _headers("ann")).allowed


def test_the_route_table_finds_a_path_with_a_trailing_slash() -> None:
    found = ROUTES.find("/ai/rules/ct/")
    assert found is not None and found[0].path == "/ai/rules/{name}" and found[1] == ("ct",)


# Orthanc's method faking: ?_method= on a GET, X-HTTP-Method-Override on anything. The filter
# gets the faked method and, for anything but a GET, no query arguments: it sees a DELETE with
# the headers the browser sent for its GET.

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.mark.parametrize("method", ["DELETE", "PUT", "POST", "GET"])
def test_a_method_faked_with_a_header_is_refused(method: str) -> None:
    headers = _headers("admin", x_http_method_override="DELETE", **WRITE)
    decision = _policy().decide(method, "/ai/rules/ct", headers)
    assert (decision.allowed, decision.reason) == (
        False,
        f"{method} /ai/rules/ct: the HTTP method is overridden; refused",
    )


@pytest.mark.parametrize(
    ("browser", "reason"),
    [
        # <img src="https://node/studies/abc?_method=delete"> on a page of another site
        (
            {"sec_fetch_site": "cross-site", "sec_fetch_mode": "no-cors", "sec_fetch_dest": "image"},
            "Sec-Fetch-Site is 'cross-site': sent from a page of another site",
        ),
        # the same link or image on a page of the node's own site (e.g. shown in a viewer)
        (
            {"sec_fetch_site": "same-origin", "sec_fetch_mode": "no-cors", "sec_fetch_dest": "image"},
            "the browser sent it to load 'image' (no-cors), not from a script",
        ),
        (
            {"sec_fetch_site": "same-origin", "sec_fetch_mode": "navigate", "sec_fetch_dest": "document"},
            "the browser sent it to load 'document' (navigate), not from a script",
        ),
        # a browser from before Sec-Fetch-*, the image with referrerpolicy="no-referrer"
        ({}, "a browser sent it without Origin: a page load or an image, not a script"),
    ],
)
def test_a_method_faked_by_a_browser_s_image_or_link_is_refused(browser: dict[str, str], reason: str) -> None:
    headers = _headers("admin", user_agent=FIREFOX, accept="image/avif,image/webp,*/*", **browser)
    decision = _policy().decide("DELETE", "/studies/abc", headers)
    assert (decision.allowed, decision.reason) == (False, f"DELETE /studies/abc: {reason} (CSRF check)")


def test_a_page_s_own_script_may_still_delete() -> None:
    headers = _headers(
        "admin",
        user_agent=FIREFOX,
        origin=f"http://{HOST}",
        sec_fetch_site="same-origin",
        sec_fetch_mode="cors",
        sec_fetch_dest="empty",
    )
    assert _policy().decide("DELETE", "/studies/abc", headers).allowed


def test_a_script_s_delete_is_no_faking() -> None:
    assert _policy().decide("DELETE", "/studies/abc", _headers("admin", user_agent="curl/7.88.1")).allowed


def test_a_viewer_s_image_load_is_a_read() -> None:
    headers = _headers("ann", user_agent=FIREFOX, sec_fetch_mode="no-cors", sec_fetch_dest="image")
    assert _policy().decide("GET", "/instances/abc/preview", headers).allowed


@pytest.mark.parametrize(
    "value", ["Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), ""]
)
def test_malformed_authorization_headers_name_no_one(value: str) -> None:
    assert basic_credentials({"authorization": value}) is None


def test_a_password_may_contain_a_colon() -> None:
    token = base64.b64encode(b"admin:pa:ss").decode()
    assert basic_credentials({"authorization": f"Basic {token}"}) == ("admin", "pa:ss")


def test_me_answers_the_user_and_role() -> None:
    (route,) = access_routes(_policy())
    operation = route.operation("GET")
    assert operation is not None
    answer = operation.handler(Request("GET", "/ai/me", headers=_headers("ann")))
    assert (answer.status, answer.body) == (200, {"user": "ann", "role": "viewer"})


def test_me_without_a_policy_answers_the_anonymous_admin() -> None:
    (route,) = access_routes(None)
    operation = route.operation("GET")
    assert operation is not None
    answer = operation.handler(Request("GET", "/ai/me"))
    assert (answer.status, answer.body) == (200, {"user": "anonymous", "role": "admin"})


# The credentials file the filter reads.


def test_first_use_creates_admin_service_and_viewer_proxy_users_in_a_private_file(tmp_path) -> None:
    path = tmp_path / "credentials.json"
    credentials, admin = ensure_credentials(path)
    assert admin is not None and admin.role is Role.ADMIN
    assert credentials.service.role is Role.ADMIN and credentials.viewer_proxy.role is Role.VIEWER
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_second_use_creates_no_new_admin(tmp_path) -> None:
    path = tmp_path / "credentials.json"
    first, _ = ensure_credentials(path)
    second, admin = ensure_credentials(path)
    assert admin is None
    assert second == first


def test_a_removed_user_is_refused_at_once(tmp_path) -> None:
    path = tmp_path / "credentials.json"
    ensure_credentials(path)
    user = add_user(path, "ann", Role.VIEWER)
    file = CredentialsFile(path)
    policy = AccessPolicy(ROUTES, file.current)
    headers = {"authorization": user.authorization_header(), "host": HOST}
    assert policy.decide("GET", "/ai/jobs", headers).allowed
    remove_user(path, "ann")
    assert not policy.decide("GET", "/ai/jobs", headers).allowed


def test_a_reset_password_refuses_the_old_one(tmp_path) -> None:
    path = tmp_path / "credentials.json"
    _, admin = ensure_credentials(path)
    assert admin is not None
    changed = reset_password(path, "admin")
    credentials = load_credentials(path)
    assert credentials.check("admin", admin.password) is None
    assert credentials.check("admin", changed.password) == changed


@pytest.mark.parametrize("name", ["ai-node", "ai-node-viewer"])
def test_the_node_s_own_users_cannot_be_removed(tmp_path, name: str) -> None:
    path = tmp_path / "credentials.json"
    ensure_credentials(path)
    with pytest.raises(ConfigurationError, match=f"user '{name}' is the node's own; it cannot be removed"):
        remove_user(path, name)


@pytest.mark.parametrize("name", ["ai-node", "ai-node-viewer"])
def test_the_node_s_own_users_keep_their_password(tmp_path, name: str) -> None:
    # Orthanc knows only the old password until it restarts: a reset would lock the workers
    # (or the viewer proxy) out.
    path = tmp_path / "credentials.json"
    before, _ = ensure_credentials(path)
    with pytest.raises(ConfigurationError, match=f"user '{name}' is the node's own; its password cannot"):
        reset_password(path, name)
    assert load_credentials(path) == before


def test_a_replaced_file_is_read_again_even_with_the_same_size_and_time(tmp_path) -> None:
    path = tmp_path / "credentials.json"
    ensure_credentials(path)
    file = CredentialsFile(path)
    first = path.stat()
    assert file.current().users
    changed = reset_password(path, "admin")  # a password of the same length: the same size
    assert path.stat().st_size == first.st_size
    # the same time as the file read first (a rewrite within one clock tick): only the inode
    # tells the replacement apart
    os.utime(path, ns=(first.st_atime_ns, first.st_mtime_ns))
    assert file.current().check("admin", changed.password) == changed


def test_the_last_admin_cannot_be_removed(tmp_path) -> None:
    path = tmp_path / "credentials.json"
    ensure_credentials(path)
    with pytest.raises(ConfigurationError, match="user 'admin' is the last admin"):
        remove_user(path, "admin")


def test_a_user_name_with_a_colon_is_refused(tmp_path) -> None:
    path = tmp_path / "credentials.json"
    with pytest.raises(ConfigurationError, match="user name 'a:b' is not valid"):
        add_user(path, "a:b", Role.VIEWER)


def test_a_missing_credentials_file_says_how_to_create_it(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match=r"does not exist: start the node once"):
        load_credentials(tmp_path / "credentials.json")


# Bodies: judged from the headers, before Orthanc reads the body


def test_a_body_larger_than_the_operation_takes_is_refused_before_it_is_read() -> None:
    forty_megabytes = str(40 * 1024 * 1024)
    decision = _policy().decide("POST", "/ai/rules/test", _headers("ann", content_length=forty_megabytes))
    assert (decision.allowed, decision.reason) == (
        False,
        f"POST /ai/rules/test: the body is {forty_megabytes} bytes; this operation takes at most 1048576",
    )
    assert _policy().decide("POST", "/ai/rules/test", _headers("ann", content_length="2000")).allowed


def test_a_form_to_the_node_is_refused_since_orthanc_would_take_it_apart() -> None:
    headers = _headers("admin", content_type="multipart/form-data; boundary=x", content_length="10")
    decision = _policy().decide("POST", "/ai/rules/test", headers)
    assert not decision.allowed
    assert "Orthanc splits multipart/form-data bodies" in decision.reason
    # Orthanc Explorer's own upload form is Orthanc's business
    assert _policy().decide("POST", "/instances", headers).allowed


def test_a_chunked_body_without_length_is_refused_on_the_node_s_routes() -> None:
    headers = _headers("admin", transfer_encoding="chunked")
    assert not _policy().decide("POST", "/ai/jobs/3/retry", headers).allowed


# A worker host's account: reads studies, stores results


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/studies/abc", True),
        ("GET", "/instances/abc/file", True),
        ("POST", "/instances", True),
        ("POST", "/dicom-web/studies", False),
        ("DELETE", "/studies/abc", False),
        ("POST", "/ai/jobs/3/retry", False),
        ("PUT", "/ai/rules/ct", False),
        ("POST", "/modalities/pacs/store", False),
    ],
)
def test_a_worker_account_reads_and_stores_results_only(method: str, path: str, allowed: bool) -> None:
    users = Credentials({**USERS.users, "w1": User("w1", Role.WORKER, "worker-pw")})
    policy = AccessPolicy(ROUTES, lambda: users)
    headers = _headers("w1", password="worker-pw")
    assert policy.decide(method, path, headers).allowed is allowed
