"""Destinations against real peers on loopback: DCMTK storescp, a pynetdicom SCP, a second Orthanc."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from node.delivery.base import Destination
from node.delivery.config import (
    BasicAuth,
    DicomConfig,
    DicomWebConfig,
    NoAuth,
    ThisOrthancConfig,
    TlsConfig,
)
from node.delivery.dicom import STORE_REFUSED_OUT_OF_RESOURCES
from node.delivery.kinds import from_config
from node.errors import DeliveryError
from node.orthanc.client import OrthancClient
from tests.factories import make_series
from tests.integration.node_fixture import free_port
from tests.integration.peers import (
    PASSWORD,
    UNUSED_ORTHANC,
    PeerOrthanc,
    StoreScp,
    dicom,
    running_storescp,
    start_peer_orthanc,
    start_storescp,
)
from tests.requirements import require_or_skip


def destination(config: DicomConfig | DicomWebConfig) -> Destination:
    return from_config(config, UNUSED_ORTHANC)


def ct_and_seg() -> list[Dataset]:
    """Two CT slices and a SEG of them: two SOP classes, so two presentation contexts."""
    ct = make_series(np.full((2, 8, 8), 40, dtype=np.int16))
    mask = np.zeros((2, 8, 8), dtype=bool)
    mask[:, 2:6, 2:6] = True
    seg = hd.seg.Segmentation(
        source_images=ct,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="tissue",
                segmented_property_category=codes.SCT.Tissue,
                segmented_property_type=codes.SCT.Tissue,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        ],
        series_instance_uid=generate_uid(),
        series_number=100,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="AI node tests",
        manufacturer_model_name="destinations",
        software_versions="0",
        device_serial_number="1",
    )
    return [*ct, seg]


@pytest.fixture(scope="module")
def peer_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerOrthanc]:
    yield from start_peer_orthanc(tmp_path_factory.mktemp("peer-orthanc"))


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreScp]:
    yield from start_storescp(tmp_path)


@pytest.fixture
def refusing_storescp(tmp_path: Path) -> Iterator[StoreScp]:
    yield from start_storescp(tmp_path, "--refuse")


def self_signed(folder: Path, subject: str, *extensions: str) -> tuple[Path, Path]:
    """A key and a self-signed certificate made by openssl, in ``folder``."""
    require_or_skip(shutil.which("openssl") is not None, "openssl is not installed")
    folder.mkdir(exist_ok=True)
    key, cert = folder / "key.pem", folder / "cert.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-keyout", str(key), "-out", str(cert), "-subj", subject]
    for extension in extensions:
        command += ["-addext", extension]
    subprocess.run(command, check=True, capture_output=True)
    return key, cert


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsConfig:
    """A self-signed certificate for 127.0.0.1, used by both ends and trusted by both."""
    key, cert = self_signed(tmp_path, "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1")
    return TlsConfig(ca_file=cert, cert_file=cert, key_file=key)


@pytest.fixture
def tls_storescp(tmp_path: Path, tls_files: TlsConfig) -> Iterator[StoreScp]:
    """storescp that speaks only TLS and requires the client's certificate (its default)."""
    options = (
        "+tls",
        str(tls_files.key_file),
        str(tls_files.cert_file),
        "-pw",
        "+cf",
        str(tls_files.ca_file),
    )
    yield from start_storescp(tmp_path, *options, tls=tls_files)


@pytest.fixture
def strict_scp() -> Iterator[int]:
    """A pynetdicom SCP that checks the called AE title (storescp accepts any) and, having no
    room, refuses every C-STORE with "Refused: Out of Resources" (PS3.4 Annex B.2.3)."""
    ae = AE(ae_title="REMOTE")
    ae.require_called_aet = True
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage)
    port = free_port()
    handlers: list[Any] = [(evt.EVT_C_STORE, lambda event: STORE_REFUSED_OUT_OF_RESOURCES.start)]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    if server is None:
        raise RuntimeError("pynetdicom returned no server for block=False")
    try:
        yield port
    finally:
        server.shutdown()


# --- DICOM C-STORE


def test_cstore_delivers_ct_and_seg_files_to_storescp(storescp: StoreScp) -> None:
    datasets = ct_and_seg()
    delivered = dicom(storescp.port).send(datasets)
    assert [d.sop_instance_uid for d in delivered] == [str(ds.SOPInstanceUID) for ds in datasets]
    assert storescp.received_uids() == {str(ds.SOPInstanceUID) for ds in datasets}
    assert delivered[0].location == f"REMOTE@127.0.0.1:{storescp.port}"


def _received_syntaxes(storescp: StoreScp) -> set[str]:
    return {
        str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        for path in storescp.folder.iterdir()
    }


def test_cstore_deflated_reaches_a_peer_that_takes_deflate_deflated(tmp_path: Path) -> None:
    datasets = ct_and_seg()
    with running_storescp(tmp_path, "+xd") as peer:  # storescp: prefer deflated
        dicom(peer.port, transfer_syntax="deflated").send(datasets)

        assert peer.received_uids() == {str(ds.SOPInstanceUID) for ds in datasets}
        assert _received_syntaxes(peer) == {DeflatedExplicitVRLittleEndian}


def test_cstore_deflated_reaches_a_peer_without_deflate_uncompressed(storescp: StoreScp) -> None:
    datasets = ct_and_seg()

    dicom(storescp.port, transfer_syntax="deflated").send(datasets)

    assert storescp.received_uids() == {str(ds.SOPInstanceUID) for ds in datasets}
    assert DeflatedExplicitVRLittleEndian not in _received_syntaxes(storescp)


def test_cstore_sends_the_same_instances_again_without_error(storescp: StoreScp) -> None:
    datasets = make_series(np.zeros((1, 4, 4), dtype=np.int16))
    dicom(storescp.port).send(datasets)
    assert len(dicom(storescp.port).send(datasets)) == 1


def test_cstore_with_wrong_called_ae_title_says_so(strict_scp: int) -> None:
    with pytest.raises(
        DeliveryError,
        match=rf"called AE title 'WRONG' not recognised by 127\.0\.0\.1:{strict_scp} \(A-ASSOCIATE-RJ: "
        r"rejected permanent, source: service user, reason 7\)",
    ):
        dicom(strict_scp, ae_title="WRONG").send(make_series(np.zeros((1, 4, 4), dtype=np.int16)))


def test_cstore_of_a_sop_class_the_peer_lacks_names_it(strict_scp: int) -> None:
    with pytest.raises(DeliveryError, match=r"accepted no presentation context for Segmentation Storage"):
        dicom(strict_scp).send(ct_and_seg())


def test_cstore_refused_by_status_names_the_status(strict_scp: int) -> None:
    with pytest.raises(
        DeliveryError,
        match=r"refused CT Image Storage [0-9.]+ with C-STORE status 0xA700 "
        r"\(refused: out of resources\)",
    ):
        dicom(strict_scp).send(make_series(np.zeros((1, 4, 4), dtype=np.int16)))


def test_cstore_to_a_refusing_peer_says_it_rejected(refusing_storescp: StoreScp) -> None:
    # storescp --refuse sends A-ASSOCIATE-RJ and closes at once; depending on which arrives
    # first, pynetdicom reports the rejection or an abort. Either is named, never a hang.
    refused = r"rejected the association: .*\(A-ASSOCIATE-RJ|aborted the association request \(A-ABORT\)"
    with pytest.raises(DeliveryError, match=refused):
        dicom(refusing_storescp.port).send(make_series(np.zeros((1, 4, 4), dtype=np.int16)))


def test_cstore_to_a_stopped_peer_fails_quickly_with_connection_refused() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(
        DeliveryError, match=rf"could not connect to 'REMOTE' at 127\.0\.0\.1:{port}: connection refused"
    ):
        dicom(port).send(make_series(np.zeros((1, 4, 4), dtype=np.int16)))
    assert time.monotonic() - started < 3


def test_cstore_over_tls_delivers_to_storescp(tls_storescp: StoreScp, tls_files: TlsConfig) -> None:
    datasets = make_series(np.zeros((2, 4, 4), dtype=np.int16))
    dicom(tls_storescp.port, tls=tls_files).send(datasets)
    assert tls_storescp.received_uids() == {str(ds.SOPInstanceUID) for ds in datasets}


def test_cstore_without_tls_to_a_tls_peer_fails(tls_storescp: StoreScp) -> None:
    with pytest.raises(DeliveryError, match=r"'REMOTE' at 127\.0\.0\.1:\d+ (aborted|did not answer)"):
        dicom(tls_storescp.port, timeout=2).send(make_series(np.zeros((1, 4, 4), dtype=np.int16)))


def test_cstore_over_tls_to_an_untrusted_peer_says_handshake_failed(
    tls_storescp: StoreScp, tmp_path: Path
) -> None:
    _, other = self_signed(tmp_path / "other", "/CN=other")
    tls = TlsConfig(ca_file=other)
    with pytest.raises(
        DeliveryError, match=r"could not connect .*: TLS handshake failed: CERTIFICATE_VERIFY_FAILED"
    ):
        dicom(tls_storescp.port, tls=tls).send(make_series(np.zeros((1, 4, 4), dtype=np.int16)))


def test_cstore_with_missing_tls_files_names_them(tmp_path: Path) -> None:
    tls = TlsConfig(ca_file=tmp_path / "missing-ca.pem")
    with pytest.raises(DeliveryError, match=r"the TLS files of destination 'peer' cannot be used"):
        dicom(free_port(), tls=tls).send(make_series(np.zeros((1, 4, 4), dtype=np.int16)))


def test_echo_of_a_running_peer_succeeds(storescp: StoreScp) -> None:
    outcome = dicom(storescp.port).test()
    assert outcome.ok, outcome.message
    assert outcome.message.startswith(f"C-ECHO to 'REMOTE' at 127.0.0.1:{storescp.port} succeeded in ")


def test_echo_of_a_stopped_peer_reports_connection_refused() -> None:
    outcome = dicom(free_port()).test()
    assert not outcome.ok
    assert "connection refused" in outcome.message


def test_echo_with_wrong_called_ae_title_reports_it(strict_scp: int) -> None:
    outcome = dicom(strict_scp, ae_title="WRONG").test()
    assert (outcome.ok, outcome.message.split(" (")[0]) == (
        False,
        f"called AE title 'WRONG' not recognised by 127.0.0.1:{strict_scp}",
    )


# --- DICOMweb STOW-RS / QIDO-RS against a second Orthanc


def dicomweb(url: str, *, password: str = PASSWORD, **options: Any) -> Destination:
    auth = BasicAuth(type="basic", username="ai", password=password)  # type: ignore[arg-type]
    return destination(
        DicomWebConfig(
            type="dicomweb", name="web peer", url=url, auth=auth, timeout=timedelta(seconds=10), **options
        )
    )


def test_stow_stores_ct_and_seg_in_the_peer_orthanc(peer_orthanc: PeerOrthanc) -> None:
    datasets = ct_and_seg()
    delivered = dicomweb(peer_orthanc.dicomweb).send(datasets)
    uids = {str(ds.SOPInstanceUID) for ds in datasets}
    assert {d.sop_instance_uid for d in delivered} == uids
    assert uids <= peer_orthanc.instance_uids()
    assert all("/dicom-web/studies/" in d.location for d in delivered), delivered


def test_stow_deflated_is_stored_and_reads_back_the_same(peer_orthanc: PeerOrthanc) -> None:
    datasets = ct_and_seg()

    dicomweb(peer_orthanc.dicomweb, transfer_syntax="deflated").send(datasets)

    stored = peer_orthanc.transfer_syntaxes()
    assert {stored[str(ds.SOPInstanceUID)] for ds in datasets} == {DeflatedExplicitVRLittleEndian}


def test_stow_sends_the_same_instances_again_without_error(peer_orthanc: PeerOrthanc) -> None:
    datasets = make_series(np.zeros((1, 4, 4), dtype=np.int16))
    dicomweb(peer_orthanc.dicomweb).send(datasets)
    assert len(dicomweb(peer_orthanc.dicomweb).send(datasets)) == 1


def test_stow_to_a_wrong_url_reports_the_http_status(peer_orthanc: PeerOrthanc) -> None:
    with pytest.raises(
        DeliveryError, match=rf"DICOMweb server {peer_orthanc.url}/wrong answered STOW-RS with HTTP 404"
    ):
        dicomweb(f"{peer_orthanc.url}/wrong").send(make_series(np.zeros((1, 4, 4), dtype=np.int16)))


def test_stow_with_a_wrong_password_reports_401(peer_orthanc: PeerOrthanc) -> None:
    with pytest.raises(DeliveryError, match=r"answered STOW-RS with HTTP 401 Unauthorized") as raised:
        dicomweb(peer_orthanc.dicomweb, password="wrong-password").send(
            make_series(np.zeros((1, 4, 4), dtype=np.int16))
        )
    assert "wrong-password" not in str(raised.value)


def test_stow_to_a_stopped_server_reports_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    started = time.monotonic()
    with pytest.raises(
        DeliveryError, match=rf"could not reach DICOMweb server {url} for STOW-RS: connection refused"
    ):
        dicomweb(url).send(make_series(np.zeros((1, 4, 4), dtype=np.int16)))
    assert time.monotonic() - started < 3


def test_qido_test_of_the_peer_orthanc_succeeds(peer_orthanc: PeerOrthanc) -> None:
    outcome = dicomweb(peer_orthanc.dicomweb).test()
    assert outcome.ok, outcome.message
    assert outcome.message.startswith(f"QIDO-RS at {peer_orthanc.dicomweb} answered")


def test_qido_test_without_credentials_reports_401(peer_orthanc: PeerOrthanc) -> None:
    config = DicomWebConfig(type="dicomweb", name="web peer", url=peer_orthanc.dicomweb, auth=NoAuth())
    outcome = destination(config).test()
    assert (outcome.ok, "answered QIDO-RS with HTTP 401" in outcome.message) == (False, True)


def test_qido_test_of_a_wrong_url_reports_404(peer_orthanc: PeerOrthanc) -> None:
    outcome = dicomweb(f"{peer_orthanc.url}/wrong").test()
    assert not outcome.ok
    assert "answered QIDO-RS with HTTP 404" in outcome.message


# --- this Orthanc (the peer Orthanc stands in for the node's own)


def test_this_orthanc_stores_and_its_test_names_the_version(peer_orthanc: PeerOrthanc) -> None:
    this = from_config(
        ThisOrthancConfig(type="this-orthanc"), OrthancClient(peer_orthanc.url, auth=("ai", PASSWORD))
    )
    datasets = make_series(np.zeros((1, 4, 4), dtype=np.int16))
    assert [d.already_present for d in this.send(datasets)] == [False]
    assert str(datasets[0].SOPInstanceUID) in peer_orthanc.instance_uids()
    outcome = this.test()
    assert (outcome.ok, outcome.message.startswith("Orthanc ")) == (True, True), outcome.message


def test_this_orthanc_test_of_a_stopped_orthanc_fails() -> None:
    outcome = from_config(ThisOrthancConfig(type="this-orthanc"), UNUSED_ORTHANC).test()
    assert not outcome.ok
    assert "did not answer GET /system" in outcome.message
