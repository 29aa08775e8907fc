"""The admin console (/ai/ui/) in Chromium against a real node: an admin routes a CT through a rule
made in the editor to a DICOM destination that is down, sees the job run and the delivery fail,
starts the peer and retries the delivery; a viewer can change nothing, and the API says so.

The node has its own data folder and a delivery policy of one attempt, so that a delivery to a
closed port fails at once instead of after the default backoff.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from node.devtools.samples import copy_with_new_uids
from tests.e2e.conftest import WINDOW
from tests.integration.node_fixture import RunningNode, free_port, make_node
from tests.integration.peers import running_storescp
from tests.requirements import require_node_components, require_or_skip, sample_series

pytestmark = pytest.mark.e2e

RULE = "ct-to-pacs"
DESTINATION = "pacs"
PEER_AE = "REMOTE"
#: how long the browser waits for the node (a CT job takes ~20 s on two cores)
JOB_TIMEOUT_MS = 300_000
STEP_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class StoredCt:
    folder: Path
    study_instance_uid: str
    series_instance_uid: str


def _first_dataset(folder: Path) -> pydicom.Dataset:
    first = next(path for path in sorted(folder.iterdir()) if path.is_file())
    return pydicom.dcmread(first, stop_before_pixels=True)


def _new_ct(tmp_path_factory: pytest.TempPathFactory, name: str) -> StoredCt:
    folder = copy_with_new_uids(sample_series("ct"), tmp_path_factory.mktemp(name))
    first = _first_dataset(folder)
    return StoredCt(folder, str(first.StudyInstanceUID), str(first.SeriesInstanceUID))


@pytest.fixture(scope="module")
def console_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    """A node whose failed deliveries are not retried on their own (one attempt)."""
    require_node_components()
    require_or_skip(
        shutil.which("storescp") is not None, "storescp is not installed (make setup installs it)"
    )
    node = make_node(
        tmp_path_factory.mktemp("console-node"),
        extra_config={"delivery": {"max_attempts": 1, "base_delay": 1}},
    )
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="module")
def stored_ct(console_node: RunningNode, tmp_path_factory: pytest.TempPathFactory) -> StoredCt:
    """A CT already in the node before any rule exists: the tester's study."""
    ct = _new_ct(tmp_path_factory, "console-stored-ct")
    console_node.send(ct.folder)
    console_node.wait_for_jobs(ct.study_instance_uid, timeout=300)
    return ct


class Screens:
    """Screenshots of each step, kept in pytest's temporary folder for a failure's reader."""

    def __init__(self, page: Any, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.count = 0

    def take(self, name: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(self.folder / f"{self.count:02d}-{name}.png"), full_page=True)


def _page(browser: Any, node: RunningNode, role: str) -> tuple[Any, Any, list[str]]:
    user, password = node.admin if role == "admin" else node.viewer
    context = browser.new_context(viewport=WINDOW, http_credentials={"username": user, "password": password})
    page = context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Chromium also logs every 4xx answer as a console error; only the page's own errors count.
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    return context, page, errors


def test_the_console_is_served_with_its_security_headers(console_node: RunningNode) -> None:
    session = console_node.session("admin")

    page = session.get(f"{console_node.url}/ai/ui/", timeout=10)
    without_slash = session.get(f"{console_node.url}/ai/ui", timeout=10, allow_redirects=False)
    script = session.get(f"{console_node.url}/ai/ui/app.js", timeout=10)
    anonymous = requests.get(f"{console_node.url}/ai/ui/", timeout=10)

    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert (without_slash.status_code, without_slash.content) == (200, page.content)
    assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert anonymous.status_code == 401


def test_an_admin_routes_a_ct_through_a_new_rule_and_retries_its_failed_delivery(
    browser: Any,
    console_node: RunningNode,
    stored_ct: StoredCt,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from playwright.sync_api import expect

    screens_folder = tmp_path_factory.mktemp("console-admin")
    context, page, errors = _page(browser, console_node, "admin")
    screens = Screens(page, screens_folder)
    peer_port = free_port()
    stack = ExitStack()  # stops the peer, once started, whatever happens
    try:
        # The dashboard counts the stored CT's job.
        page.goto(f"{console_node.url}/ai/ui/")
        expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
        expect(page.locator("#queue-depth")).to_have_text(re.compile(r"^\d+$"))
        expect(page.locator("dd[data-status='done']")).to_have_text(re.compile(r"^[1-9]\d*$"))
        screens.take("dashboard")

        # A DICOM destination that is down (nothing listens on its port yet).
        page.get_by_role("link", name="Destinations").click()
        page.get_by_role("button", name="New destination").click()
        form = page.get_by_role("form", name="New destination")
        form.get_by_label("Name", exact=True).fill(DESTINATION)
        form.get_by_label("Called AE title (peer)").fill(PEER_AE)
        form.get_by_label("Host").fill("127.0.0.1")
        form.get_by_label("Port").fill(str(peer_port))
        form.get_by_label("Timeout (s)").fill("5")
        form.get_by_role("button", name="Save destination").click()
        row = page.get_by_role("row").filter(has_text=f"{PEER_AE} @ 127.0.0.1:{peer_port}")
        expect(row).to_be_visible()
        row.get_by_role("button", name=f"Test {DESTINATION}").click()
        expect(row.locator(".test-outcome")).to_contain_text("failed")
        screens.take("destination-down")

        # The rule: an invalid condition shows the parser's message live, then a valid one.
        page.get_by_role("link", name="Rules").click()
        page.get_by_role("link", name="New rule").click()
        page.get_by_label("Name", exact=True).fill(RULE)
        condition = page.get_by_label("Condition", exact=True)
        condition.fill('Modality == "CT" and and')
        message = page.locator("#condition-message")
        expect(message).to_have_class(re.compile(r"\binvalid\b"))
        expect(message).to_contain_text("line 1")
        expect(condition).to_have_attribute("aria-invalid", "true")
        screens.take("rule-invalid")
        condition.fill('Modality == "CT"')
        expect(message).to_have_text("Condition is valid.")
        page.get_by_role("checkbox", name=re.compile(r"^ct-tissue")).check()
        page.get_by_role("checkbox", name=re.compile(rf"^{DESTINATION}\b")).check()
        expect(page.get_by_role("checkbox", name=re.compile(r"^this-orthanc"))).to_be_checked()

        # The tester: the stored CT matches the draft, with its CT series chosen.
        study_id = console_node.orthanc_study_id(stored_ct.study_instance_uid)
        studies = page.get_by_label("Stored study")
        expect(studies.locator("option")).not_to_have_count(1)
        options = studies.locator("option").evaluate_all("(all) => all.map((o) => [o.value, o.text])")
        assert any(value == study_id for value, _ in options), f"{study_id} not offered: {options}"
        studies.select_option(value=study_id)
        page.get_by_role("button", name="Run test").click()
        result = page.locator(f"article[data-rule='{RULE}']")
        expect(result.locator("h3 .badge")).to_have_text("matched")
        expect(result).to_contain_text(stored_ct.series_instance_uid)
        expect(result.locator(".selected-series")).to_contain_text("CT")
        screens.take("rule-tested")

        page.get_by_role("button", name="Create rule").click()
        expect(page).to_have_url(re.compile(rf"#/rules/{RULE}$"))
        expect(page.get_by_role("heading", name=f"Rule {RULE}", level=1)).to_be_visible()
        page.get_by_role("link", name="All rules").click()
        expect(page.get_by_role("link", name=RULE)).to_be_visible()

        # A new CT is routed through the rule; its job runs to done in the jobs page.
        ct = _new_ct(tmp_path_factory, "console-routed-ct")
        console_node.send(ct.folder)
        page.goto(f"{console_node.url}/ai/ui/#/jobs?study={ct.study_instance_uid}")
        job_row = page.get_by_role("row").filter(has_text="ct-tissue")
        expect(job_row.locator(".badge")).to_have_text("done", timeout=JOB_TIMEOUT_MS)
        screens.take("job-done")
        job_row.get_by_role("link").first.click()
        expect(page.locator("#job-status")).to_have_text("done")
        expect(page.locator("tr[data-stage]").first).to_be_visible()
        assert page.locator("tr[data-stage]").count() >= 3
        expect(page.get_by_role("link", name="Study in Orthanc Explorer")).to_have_attribute(
            "href", re.compile(r"/app/explorer\.html#study\?uuid=")
        )

        # Its delivery to the closed port fails (one attempt), and is retried once the peer is up.
        delivery = page.get_by_role("row").filter(has_text=DESTINATION).filter(has_not_text="this-orthanc")
        expect(delivery.locator(".badge")).to_have_text("failed", timeout=JOB_TIMEOUT_MS)
        screens.take("delivery-failed")
        peer = stack.enter_context(running_storescp(tmp_path_factory.mktemp("console-peer"), port=peer_port))
        delivery.get_by_role("button", name=f"Retry delivery to {DESTINATION}").click()
        expect(delivery.locator(".badge")).to_have_text("delivered", timeout=JOB_TIMEOUT_MS)
        screens.take("delivery-retried")
        assert peer.received_uids(), "the peer received nothing"

        # Every change is in the audit log.
        page.get_by_role("link", name="Audit log").click()
        expect(page.get_by_role("row").filter(has_text=RULE).first).to_be_visible()
        expect(page.get_by_role("row").filter(has_text=DESTINATION).first).to_be_visible()
        assert errors == [], f"errors in the page: {errors}"
    except Exception:
        screens.take("failure")
        raise
    finally:
        stack.close()
        context.close()


def test_the_tester_explains_an_uploaded_file_through_orthanc(
    browser: Any, console_node: RunningNode, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A file, not a stored study: the upload goes through the real Orthanc, which takes a
    multipart/form-data body apart itself (the tester sends multipart/related)."""
    from playwright.sync_api import expect

    context, page, errors = _page(browser, console_node, "admin")
    screens = Screens(page, tmp_path_factory.mktemp("console-tester"))
    one_file = next(iter(sorted(_new_ct(tmp_path_factory, "console-upload").folder.glob("*.dcm"))))
    try:
        # a draft on the new rule page: its clause fails on the file, with the reason
        page.goto(f"{console_node.url}/ai/ui/#/rules/new")
        page.get_by_label("Name", exact=True).fill("upload-draft")
        page.get_by_label("Condition", exact=True).fill('Modality == "CT" and SliceThickness > 100')
        page.get_by_role("checkbox", name=re.compile(r"^ct-tissue")).check()
        page.get_by_label("or a DICOM file").set_input_files(str(one_file))
        page.get_by_role("button", name="Run test").click()
        result = page.locator("article[data-rule='upload-draft']")
        expect(result.locator("h3 .badge")).not_to_have_text("matched")
        expect(result.locator(".explanation").first).to_contain_text("SliceThickness")
        screens.take("draft-on-a-file")

        # the stored rules on the rules page, on the same file
        page.goto(f"{console_node.url}/ai/ui/#/rules")
        page.get_by_label("or a DICOM file").set_input_files(str(one_file))
        page.get_by_role("button", name="Run test").click()
        expect(page.locator("article[data-rule]").first).to_be_visible()
        expect(page.locator(".test-output")).to_contain_text("fewer than 10 slices")
        screens.take("stored-rules-on-a-file")
        assert errors == [], f"errors in the page: {errors}"
    except Exception:
        screens.take("failure")
        raise
    finally:
        context.close()


def test_a_40_mb_upload_to_the_tester_is_refused_before_orthanc_reads_it(console_node: RunningNode) -> None:
    body = b"\0" * (40 * 1024 * 1024)
    answer = console_node.session("admin").post(
        f"{console_node.url}/ai/rules/test",
        data=body,
        headers={"Content-Type": "application/dicom"},
        timeout=60,
    )
    assert answer.status_code == 403
    assert console_node.session("admin").get(f"{console_node.url}/ai/health", timeout=10).status_code == 200


def test_a_viewer_sees_no_edit_controls_and_the_api_refuses_their_changes(
    browser: Any, console_node: RunningNode, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from playwright.sync_api import expect

    admin = console_node.session("admin")
    rule = {"name": "viewer-sees-this", "condition": 'Modality == "MR"', "pipelines": ["brain-extraction"]}
    created = admin.post(f"{console_node.url}/ai/rules", json=rule, timeout=10)
    assert created.status_code == 201, created.text
    context, page, _ = _page(browser, console_node, "viewer")
    screens = Screens(page, tmp_path_factory.mktemp("console-viewer"))
    try:
        page.goto(f"{console_node.url}/ai/ui/#/rules")
        expect(page.locator("#who")).to_contain_text("read only")
        expect(page.get_by_role("link", name=rule["name"])).to_be_visible()
        expect(page.get_by_role("link", name="New rule")).to_have_count(0)
        page.get_by_role("link", name=rule["name"]).click()
        expect(page.get_by_label("Condition", exact=True)).to_be_disabled()
        expect(page.get_by_role("button", name="Save rule")).to_have_count(0)
        expect(page.get_by_role("button", name="Delete rule")).to_have_count(0)
        page.get_by_role("link", name="Destinations").click()
        expect(page.get_by_role("row").filter(has_text="this-orthanc")).to_be_visible()
        expect(page.get_by_role("button", name="New destination")).to_have_count(0)
        screens.take("viewer")

        # The page hides the controls; the API refuses the change itself.
        status = page.evaluate(
            """async (rule) => {
                const answer = await fetch('/ai/rules', {
                    method: 'POST',
                    headers: {'Content-Type': 'application/json'},
                    body: JSON.stringify({...rule, name: 'from-a-viewer'}),
                });
                return answer.status;
            }""",
            rule,
        )
        assert status == 403
        names = [stored["name"] for stored in admin.get(f"{console_node.url}/ai/rules", timeout=10).json()]
        assert "from-a-viewer" not in names
    finally:
        context.close()
