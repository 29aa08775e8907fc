"""A real node with HTTPS, DICOM TLS and an allow-list of callers; the storage cap; a start
refused for remote access without authentication."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from werkzeug.test import Client

from node.devtools.demo import first_study_uid
from node.devtools.viewer import ViewerApp
from node.orthanc.tls import CertificatePair, make_self_signed
from tests.integration.node_fixture import RunningNode, make_node

ALLOWED_AET = "CT-ALLOWED"


def storescu(node: RunningNode, folder: Path, *, calling_aet: str, tls: CertificatePair | None = None):
    """storescu as a modality runs it; with ``tls``, over DICOM TLS with that client pair,
    trusting the node's certificate."""
    command = ["storescu", "-v", "-aet", calling_aet, "-aec", "AINODE", "+sd", "+r"]
    if tls is not None:
        assert node.https_certificate is not None
        command += ["--enable-tls", str(tls.private_key), str(tls.certificate)]
        command += ["--add-cert-file", node.https_certificate]
    command += ["127.0.0.1", str(node.dicom_port), str(folder)]
    env = dict(os.environ, TCP_NODELAY="1")
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)


def instance_count(node: RunningNode) -> int:
    return len(node.client.get_json("/instances"))


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertificatePair]:
    folder = tmp_path_factory.mktemp("tls")
    return {
        "node": make_self_signed(folder, stem="node"),
        "modality": make_self_signed(folder, stem="modality"),
        "stranger": make_self_signed(folder, stem="stranger"),
    }


@pytest.fixture(scope="module")
def secure_node(
    node_components: None, certificates: dict[str, CertificatePair], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningNode]:
    node_pair, modality = certificates["node"], certificates["modality"]
    node = make_node(
        tmp_path_factory.mktemp("secure-node"),
        extra_config={
            "orthanc": {
                "https": {
                    "certificate": str(node_pair.certificate),
                    "private_key": str(node_pair.private_key),
                },
                "dicom_tls": {
                    "certificate": str(node_pair.certificate),
                    "private_key": str(node_pair.private_key),
                    "trusted_certificates": str(modality.certificate),
                },
                "allowed_callers": [{"ae_title": ALLOWED_AET}],
            }
        },
    )
    with pytest.MonkeyPatch.context() as environment:
        # a system CA bundle in the environment, as many hosts set it: requests prefers it to
        # a session's own ``verify``, and the node's clients must still trust their own node
        environment.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
        node.start()
        yield node
        node.stop()


def test_the_node_answers_https_with_its_own_certificate(secure_node: RunningNode) -> None:
    assert secure_node.url.startswith("https://")
    answer = requests.get(
        f"{secure_node.url}/ai/health", auth=secure_node.admin, timeout=10, verify=secure_node.trust
    )
    assert answer.status_code == 200
    with pytest.raises(requests.exceptions.SSLError):  # not trusted without its certificate
        requests.get(f"{secure_node.url}/ai/health", auth=secure_node.admin, timeout=10)
    with pytest.raises(requests.ConnectionError):  # and no plain HTTP on the port
        requests.get(
            f"http://127.0.0.1:{secure_node.http_port}/ai/health", auth=secure_node.admin, timeout=10
        )


def test_a_study_sent_over_dicom_tls_by_an_allowed_caller_is_processed(
    secure_node: RunningNode, certificates: dict[str, CertificatePair], ct_sample: Path, new_study
) -> None:
    study = new_study(ct_sample)
    sent = storescu(secure_node, study, calling_aet=ALLOWED_AET, tls=certificates["modality"])
    assert sent.returncode == 0, sent.stderr
    # the worker fetched and stored its results through the node's HTTPS
    (job,) = secure_node.wait_for_jobs(first_study_uid(study))
    assert job["status"] == "done", job


def one_instance(sample: Path, folder: Path) -> Path:
    """A folder holding the first instance of ``sample``: enough for a store to be refused."""
    one = folder / "one"
    one.mkdir()
    shutil.copy(sorted(sample.iterdir())[0], one)
    return one


def test_a_caller_not_on_the_allow_list_is_refused(
    secure_node: RunningNode, certificates: dict[str, CertificatePair], ct_sample: Path, tmp_path: Path
) -> None:
    before = instance_count(secure_node)
    one = one_instance(ct_sample, tmp_path)
    sent = storescu(secure_node, one, calling_aet="CT-STRANGER", tls=certificates["modality"])
    # Orthanc accepts the association, then refuses the request itself ("Rejected Store
    # request from remote DICOM modality"), which storescu reports as a failed store
    assert sent.returncode != 0 and "Store Failed" in sent.stderr
    assert instance_count(secure_node) == before


def test_plain_dicom_and_unknown_certificates_are_refused(
    secure_node: RunningNode, certificates: dict[str, CertificatePair], ct_sample: Path, tmp_path: Path
) -> None:
    before = instance_count(secure_node)
    one = one_instance(ct_sample, tmp_path)
    assert storescu(secure_node, one, calling_aet=ALLOWED_AET).returncode != 0
    assert storescu(secure_node, one, calling_aet=ALLOWED_AET, tls=certificates["stranger"]).returncode != 0
    assert instance_count(secure_node) == before


def test_c_store_past_the_storage_cap_is_refused_and_nothing_is_deleted(
    node_in, ct_sample: Path, tmp_path: Path
) -> None:
    files = sorted(ct_sample.iterdir())[:6]
    cap = sum(path.stat().st_size for path in files[:3]) + files[3].stat().st_size // 2
    node = node_in(extra_config={"orthanc": {"max_storage_size": cap}})
    node.start()
    subset = tmp_path / "subset"
    subset.mkdir()
    for path in files:
        shutil.copy(path, subset)
    sent = storescu(node, subset, calling_aet="ANY")
    assert "OutOfResources" in sent.stdout + sent.stderr, sent.stderr
    # the first three fit; Orthanc's own cap would have made room by deleting patients
    assert instance_count(node) == 3
    assert node.client.get_json("/ai/health")["storage"]["max_bytes"] == cap


def test_remote_access_without_authentication_stops_the_start(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "var"),
                "orthanc": {"http_remote_access": True, "authentication": False},
            }
        )
    )
    started = subprocess.run(
        [sys.executable, "-m", "node.cli.main", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 2
    assert "http_remote_access: true with authentication: false" in started.stderr
    assert not (tmp_path / "var").exists()  # refused before anything started


def test_the_viewer_proxy_reads_dicomweb_over_https(secure_node: RunningNode, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html></html>")
    viewer = ViewerApp(
        tmp_path, secure_node.url, auth=secure_node.credential("ai-node-viewer"), trust=secure_node.trust
    )
    answer = Client(viewer).get("/dicom-web/studies")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert isinstance(answer.json, list)
