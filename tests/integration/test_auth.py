"""Authentication and roles against a real node: Orthanc's basic auth, then the plugin's filter."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from node.credentials import Role, add_user, load_credentials, remove_user
from tests.integration.node_fixture import RunningNode, make_node


@pytest.fixture(scope="module")
def node(node_components: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    running = make_node(tmp_path_factory.mktemp("auth-node"))
    running.start()
    yield running
    running.stop()


def test_a_request_without_credentials_gets_401(node: RunningNode) -> None:
    assert requests.get(f"{node.url}/ai/jobs", timeout=10).status_code == 401


def test_a_wrong_password_gets_401(node: RunningNode) -> None:
    assert requests.get(f"{node.url}/ai/jobs", auth=("admin", "wrong"), timeout=10).status_code == 401


def test_a_viewer_may_list_jobs(node: RunningNode) -> None:
    assert node.session("viewer").get(f"{node.url}/ai/jobs", timeout=10).status_code == 200


def test_a_viewer_may_not_retry_a_job(node: RunningNode) -> None:
    assert node.session("viewer").post(f"{node.url}/ai/jobs/1/retry", timeout=10).status_code == 403


def test_an_admin_write_without_x_requested_by_gets_403(node: RunningNode) -> None:
    answer = requests.post(f"{node.url}/ai/jobs/1/retry", auth=node.admin, timeout=10)
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
