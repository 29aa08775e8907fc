"""A real node with a processed CT and MR, the OHIF viewer of ``make viewer``, and Chromium.

Everything is started once per session: the node (``ai-node run`` on free ports), the two
samples sent with storescu and processed, ``python -m node.devtools.viewer`` in front of the node's
Orthanc, and Debian's Chromium, headless, through Playwright (no browser is downloaded).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from node.devtools.samples import SampleName, copy_with_new_uids
from node.devtools.viewer import ensure_ohif
from node.errors import ConfigurationError
from tests.integration.node_fixture import RunningNode, free_port, make_node, wait_until_ready
from tests.requirements import (
    REPOSITORY,
    require_node_components,
    require_or_skip,
    sample_series,
    skip_or_fail,
)

CHROMIUM = Path("/usr/bin/chromium")
#: Headless Chromium as root in a container with no GPU and no internet. WebGL still works:
#: Chromium falls back to SwiftShader (software), which OHIF's cornerstone3D renders with.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OHIF_CACHE = REPOSITORY / ".cache" / "ohif"
#: A page size at which OHIF shows its side panels and a large viewport.
WINDOW = {"width": 1400, "height": 900}


@dataclass(frozen=True)
class ProcessedStudy:
    """A sample sent to the node as a new study, and the job that processed it."""

    name: SampleName
    folder: Path
    study_instance_uid: str
    job: dict[str, Any]


@pytest.fixture(scope="session")
def e2e_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    require_node_components()
    # the CT's results include the planar SR too, so OHIF is shown both reports the node writes
    node = make_node(
        tmp_path_factory.mktemp("e2e-node"),
        extra_config={"pipeline_settings": {"ct-tissue": {"results": ["seg", "sr", "planar-sr"]}}},
    )
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def processed_studies(
    e2e_node: RunningNode, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, ProcessedStudy]:
    """The CT and the T1 MR sample, each sent as a new study and processed by the node."""
    names: tuple[SampleName, ...] = ("ct", "mr")
    sent = {}
    for name in names:
        folder = copy_with_new_uids(sample_series(name), tmp_path_factory.mktemp(f"e2e-{name}"))
        sent[name] = (folder, e2e_node.send(folder))
    studies: dict[str, ProcessedStudy] = {}
    for name, (folder, uid) in sent.items():
        (job,) = e2e_node.wait_for_jobs(uid, timeout=300)
        assert job["status"] == "done", f"the {name} job failed: {job['error']}"
        studies[name] = ProcessedStudy(name=name, folder=folder, study_instance_uid=uid, job=job)
    return studies


@pytest.fixture(scope="session")
def ohif_dist() -> Path:
    require_or_skip(shutil.which("npm") is not None, "npm is not installed (make setup installs it)")
    try:
        return ensure_ohif(OHIF_CACHE)
    except ConfigurationError as error:
        skip_or_fail(f"OHIF could not be fetched: {error}")


@dataclass(frozen=True)
class RunningViewer:
    url: str
    #: what `python -m node.devtools.viewer` printed when it started
    banner: str


@pytest.fixture(scope="session")
def viewer(
    e2e_node: RunningNode,
    processed_studies: dict[str, ProcessedStudy],
    ohif_dist: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningViewer]:
    """``python -m node.devtools.viewer`` (what ``make viewer`` runs) in front of the node's Orthanc."""
    port = free_port()
    output = tmp_path_factory.mktemp("viewer") / "viewer-console.log"
    with open(output, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "node.devtools.viewer",
                "--config",
                str(e2e_node.config_file),
                "--port",
                str(port),
                "--cache-dir",
                str(OHIF_CACHE),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(
            process,
            lambda: "Ctrl-C stops the viewer." in output.read_text(),
            what="the viewer",
            log=output.read_text,
            timeout=60,
        )
        assert requests.get(f"{url}/", timeout=10).status_code == 200
        yield RunningViewer(url=url, banner=output.read_text())
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    require_or_skip(
        CHROMIUM.is_file(), f"{CHROMIUM} is not installed (make setup installs Debian's chromium)"
    )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("Playwright for Python is not installed (make setup installs requirements-dev.txt)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()
