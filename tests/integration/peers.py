"""Real peers for the destination tests: DCMTK storescp and a second Orthanc with DICOMweb."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pydicom
import requests

from node.delivery.base import Destination
from node.delivery.config import DicomConfig, TlsConfig
from node.delivery.kinds import from_config
from node.orthanc.client import OrthancClient
from tests.integration.node_fixture import answers_http, free_port, wait_until_ready
from tests.requirements import require_or_skip

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
PASSWORD = "peer-password-1"
UNUSED_ORTHANC = OrthancClient("http://127.0.0.1:1")


def dicom(port: int, *, ae_title: str = "REMOTE", timeout: float = 5, **options: object) -> Destination:
    return from_config(
        DicomConfig(
            type="dicom",
            name="peer",
            ae_title=ae_title,
            host="127.0.0.1",
            port=port,
            timeout=timedelta(seconds=timeout),
            **options,  # type: ignore[arg-type]
        ),
        UNUSED_ORTHANC,
    )


def wait_for_echo(
    process: subprocess.Popen[bytes], peer: Destination, log: Path, timeout: float = 10
) -> None:
    """Wait until a peer answers C-ECHO, or rejects it (a plain TCP probe would make storescp
    log an error)."""

    def answers() -> bool:
        outcome = peer.test()
        return outcome.ok or "A-ASSOCIATE-RJ" in outcome.message

    wait_until_ready(
        process,
        answers,
        what="the DICOM peer",
        log=lambda: log.read_text(errors="replace"),
        timeout=timeout,
        interval=0.1,
    )


@dataclass
class StoreScp:
    port: int
    folder: Path

    def received_uids(self) -> set[str]:
        return {str(pydicom.dcmread(path).SOPInstanceUID) for path in self.folder.iterdir() if path.is_file()}


def start_storescp(
    tmp_path: Path, *options: str, tls: TlsConfig | None = None, port: int | None = None
) -> Iterator[StoreScp]:
    """DCMTK's storescp (AE title REMOTE) on ``port`` (default: a free one), once it answers
    C-ECHO; it writes what it receives into ``tmp_path/received`` and logs to
    ``tmp_path/storescp.log``. A generator for fixtures (``yield from``); tests that start a
    peer part-way use :func:`running_storescp`."""
    require_or_skip(shutil.which("storescp") is not None, "storescp is not installed (Debian package dcmtk)")
    folder = tmp_path / "received"
    folder.mkdir()
    port = port or free_port()
    log = tmp_path / "storescp.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            ["storescp", "-od", str(folder), "-aet", "REMOTE", *options, str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, TCP_NODELAY="1"),
        )
    try:
        wait_for_echo(process, dicom(port, tls=tls), log)
        yield StoreScp(port=port, folder=folder)
    finally:
        process.terminate()
        process.wait(10)


running_storescp = contextmanager(start_storescp)


@dataclass
class PeerOrthanc:
    url: str

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def instance_uids(self) -> set[str]:
        return set(self._instances())

    def transfer_syntaxes(self) -> dict[str, str]:
        """SOP Instance UID -> the transfer syntax the peer stored the instance in."""
        syntaxes = {}
        for uid, orthanc_id in self._instances().items():
            answer = requests.get(
                f"{self.url}/instances/{orthanc_id}/metadata/TransferSyntax",
                auth=("ai", PASSWORD),
                timeout=10,
            )
            answer.raise_for_status()
            syntaxes[uid] = answer.text.strip()
        return syntaxes

    def _instances(self) -> dict[str, str]:
        answer = requests.get(f"{self.url}/instances?expand", auth=("ai", PASSWORD), timeout=10)
        answer.raise_for_status()
        return {instance["MainDicomTags"]["SOPInstanceUID"]: instance["ID"] for instance in answer.json()}


def start_peer_orthanc(folder: Path) -> Iterator[PeerOrthanc]:
    require_or_skip(shutil.which("Orthanc") is not None, "Orthanc is not installed (make setup installs it)")
    require_or_skip(DICOMWEB_PLUGIN.exists(), "orthanc-dicomweb is not installed (make setup installs it)")
    http_port = free_port()
    config = {
        "Name": "destination peer",
        "HttpPort": http_port,
        "DicomPort": free_port(),
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {"ai": PASSWORD},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    url = f"http://127.0.0.1:{http_port}"
    with open(folder / "orthanc.log", "wb") as log:
        process = subprocess.Popen(
            ["Orthanc", str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until_ready(
            process,
            lambda: answers_http(f"{url}/system", ("ai", PASSWORD)),
            what="the peer Orthanc",
            log=lambda: (folder / "orthanc.log").read_text(errors="replace"),
            timeout=20,
            interval=0.1,
        )
        yield PeerOrthanc(url=url)
    finally:
        process.terminate()
        process.wait(20)
