"""Authentication and roles against a real node: Orthanc's basic auth, then the plugin's filter."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import requests

from node.credentials import Role, add_user, load_credentials, remove_user
from tests.integration.node_fixture import RunningNode


@pytest.fixture(scope="module")
def node(shared_node: RunningNode) -> RunningNode:
    """This module's node (conftest's shared_node is one per module): users added or removed
    here change no other module's node."""
    return shared_node


def test_a_request_without_credentials_gets_401(node: RunningNode) -> None:
    assert requests.get(f"{node.url}/ai/jobs", timeout=10).status_code == 401


def test_a_wrong_password_gets_401(node: RunningNode) -> None:
    assert requests.get(f"{node.url}/ai/jobs", auth=("admin", "wrong"), timeout=10).status_code == 401


def test_a_viewer_may_list_jobs(node: RunningNode) -> None:
    assert node.session("viewer").get(f"{node.url}/ai/jobs", timeout=10).status_code == 200


def test_a_viewer_may_not_retry_a_job(node: RunningNode) -> None:
    assert node.session("viewer").post(f"{node.url}/ai/jobs/1/retry", timeout=10).status_code == 403


def test_a_script_s_admin_write_needs_no_custom_header(node: RunningNode) -> None:
    answer = requests.post(f"{node.url}/ai/jobs/999999/retry", auth=node.admin, timeout=10)
    # past the filter: the route itself answers that there is no such job
    assert answer.status_code == 404


def test_an_admin_write_a_browser_sends_from_another_site_gets_403(node: RunningNode) -> None:
    answer = requests.post(
        f"{node.url}/ai/jobs/999999/retry",
        auth=node.admin,
        headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
        timeout=10,
    )
    assert answer.status_code == 403


def test_an_admin_write_from_a_foreign_origin_gets_403(node: RunningNode) -> None:
    answer = node.session("admin").post(
        f"{node.url}/ai/jobs/1/retry", headers={"Origin": "http://evil.example"}, timeout=10
    )
    assert answer.status_code == 403


def test_a_proper_admin_write_passes_the_filter(node: RunningNode) -> None:
    answer = node.session("admin").post(
        f"{node.url}/ai/jobs/999999/retry", headers={"Origin": node.url}, timeout=10
    )
    # No such job: the route itself answers, with its own error.
    assert answer.status_code == 404
    assert "error" in answer.json()


def test_a_viewer_may_not_delete_a_study(node: RunningNode) -> None:
    assert node.session("viewer").delete(f"{node.url}/studies/x", timeout=10).status_code == 403


def test_a_viewer_may_search_orthanc(node: RunningNode) -> None:
    answer = node.session("viewer").post(
        f"{node.url}/tools/find", json={"Level": "Study", "Query": {}}, timeout=10
    )
    assert answer.status_code == 200


def test_a_viewer_may_not_store_with_stow_rs(node: RunningNode) -> None:
    answer = node.session("viewer").post(
        f"{node.url}/dicom-web/studies",
        data=b"",
        headers={"Content-Type": "multipart/related; type=application/dicom; boundary=x"},
        timeout=10,
    )
    assert answer.status_code == 403


def test_a_sender_may_store_and_nothing_else(node: RunningNode, ct_sample: Path) -> None:
    sender = node.session("sender")
    first = sorted(ct_sample.glob("*.dcm"))[0]
    stored = sender.post(f"{node.url}/instances", data=first.read_bytes(), timeout=30)
    assert stored.status_code == 200, stored.text
    for method, path in (
        ("GET", f"/instances/{stored.json()['ID']}"),
        ("GET", "/dicom-web/studies"),
        ("GET", "/ai/jobs"),
        ("GET", "/ai/me"),
        ("POST", "/tools/find"),
        ("DELETE", f"/instances/{stored.json()['ID']}"),
    ):
        assert sender.request(method, f"{node.url}{path}", json={}, timeout=10).status_code == 403, path


@pytest.mark.parametrize(("role", "name"), [("admin", "admin"), ("viewer", "viewer")])
def test_me_answers_the_user_and_role(node: RunningNode, role: str, name: str) -> None:
    answer = node.session(role).get(f"{node.url}/ai/me", timeout=10)
    assert answer.json() == {"user": name, "role": role}


def test_the_credentials_file_and_orthanc_s_configuration_are_private(node: RunningNode) -> None:
    assert stat.S_IMODE(node.credentials_file.stat().st_mode) == 0o600
    orthanc_json = node.folder / "var" / "orthanc" / "orthanc.json"
    assert stat.S_IMODE(orthanc_json.stat().st_mode) == 0o600


def test_the_admin_password_is_printed_on_the_first_start_only(node_in) -> None:
    fresh: RunningNode = node_in(prepare_users=False)
    fresh.start()
    fresh.stop()
    password = load_credentials(fresh.credentials_file).users["admin"].password
    console = Path(fresh.folder / "node-console.log")
    assert console.read_text().count(password) == 1
    fresh.start()
    fresh.stop()
    assert console.read_text().count(password) == 1
    assert f"kept in {fresh.credentials_file}" in console.read_text()


@pytest.fixture(scope="module")
def study_id(node: RunningNode, ct_sample: Path) -> str:
    """An Orthanc study of one CT instance, stored by the admin as a script would."""
    first = sorted(ct_sample.glob("*.dcm"))[0]
    stored = node.session("admin").post(f"{node.url}/instances", data=first.read_bytes(), timeout=30)
    assert stored.status_code == 200, stored.text
    return str(stored.json()["ParentStudy"])


@pytest.mark.parametrize("path", ["/ai/rules/all-pipelines/", "/ai/rules%2Fall-pipelines"])
def test_a_viewer_may_not_delete_a_rule_through_another_spelling_of_its_path(
    node: RunningNode, path: str
) -> None:
    # Orthanc routes /ai/rules/all-pipelines/ to the rule; the filter used to find no route
    # for it and let it through without the role and CSRF checks.
    answer = requests.delete(
        f"{node.url}{path}", auth=node.viewer, headers={"Origin": "http://evil.example"}, timeout=10
    )
    assert answer.status_code == 403
    assert node.session("viewer").get(f"{node.url}/ai/rules/all-pipelines", timeout=10).status_code == 200


FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.mark.parametrize(
    "browser",
    [
        # what a current browser sends for <img src=".../studies/X?_method=delete"> elsewhere
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"},
        # and an old one, for an image with referrerpolicy="no-referrer"
        {},
    ],
)
def test_a_delete_faked_by_a_browser_s_image_is_refused(
    node: RunningNode, study_id: str, browser: dict[str, str]
) -> None:
    # Orthanc turns the GET into a DELETE before the filter and hides its query from it: the
    # browser's own headers are what give it away.
    faked = requests.get(
        f"{node.url}/studies/{study_id}?_method=delete",
        auth=node.admin,
        headers={"User-Agent": FIREFOX, "Accept": "image/avif,image/webp,*/*", **browser},
        timeout=10,
    )
    assert faked.status_code == 403
    overridden = requests.post(
        f"{node.url}/studies/{study_id}",
        auth=node.admin,
        headers={"X-HTTP-Method-Override": "DELETE"},
        timeout=10,
    )
    assert overridden.status_code == 403
    assert node.session("viewer").get(f"{node.url}/studies/{study_id}", timeout=10).status_code == 200


def test_an_admin_change_to_orthanc_from_another_site_is_refused(node: RunningNode, study_id: str) -> None:
    answer = requests.delete(
        f"{node.url}/studies/{study_id}",
        auth=node.admin,
        headers={"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"},
        timeout=10,
    )
    assert answer.status_code == 403
    assert node.session("viewer").get(f"{node.url}/studies/{study_id}", timeout=10).status_code == 200


def test_a_change_to_the_built_in_destination_answers_405(node: RunningNode) -> None:
    admin = node.session("admin")
    for method in ("PUT", "DELETE"):
        answer = admin.request(method, f"{node.url}/ai/destinations/this-orthanc", json={}, timeout=10)
        # 405 used to make Orthanc's SendHttpStatus throw: a 500
        assert answer.status_code == 405
        assert answer.headers["Allow"] == "GET"
    assert admin.get(f"{node.url}/ai/destinations/this-orthanc", timeout=10).status_code == 200


# Last in this module: it leaves the viewer with a password Orthanc does not know yet.
def test_a_removed_user_is_refused_without_a_restart(node: RunningNode) -> None:
    # Added users need a restart to log in (Orthanc reads its users at start); removal does not.
    viewer = node.session("viewer")
    assert viewer.get(f"{node.url}/ai/me", timeout=10).status_code == 200
    remove_user(node.credentials_file, "viewer")
    try:
        assert viewer.get(f"{node.url}/ai/me", timeout=10).status_code == 403
    finally:
        add_user(node.credentials_file, "viewer", Role.VIEWER)
