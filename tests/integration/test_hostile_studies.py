"""Hostile studies through a real node: each ends in one set of results or one failed job that
says what is wrong with the input, and the node keeps processing the studies that follow.

One node for the module; every study is 12 to 14 neighbouring slices of the head CT sample
(ct-tissue needs 10), changed the way real modalities, archives and networks change studies,
and sent over DICOM (DCMTK's storescu, or pynetdicom where the association must be cut).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGExtended12Bit,
    JPEGLSLossless,
    RLELossless,
    SegmentationStorage,
)
from pynetdicom import AE

from node.devtools.samples import copy_with_new_uids
from node.imaging.series import build_volume
from node.pipeline.voxels import SegmentVoxels
from node.results.seg import AlgorithmInfo, DeviceInfo, build_segmentation
from pipelines.ct_tissue import CtTissueSegmentation
from tests.integration.node_fixture import RunningNode

pytestmark = pytest.mark.integration

#: neighbouring slices through the skull: bone, air and soft tissue
SLICES = slice(40, 54)
NODE_RESULTS = ("SEG", "SR")


@dataclass(frozen=True)
class Study:
    folder: Path
    uid: str
    series_uid: str


@pytest.fixture(scope="module")
def slices(ct_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """14 slices of the head CT; each study below is a copy of them with new UIDs."""
    folder = tmp_path_factory.mktemp("slices")
    for path in sorted(ct_sample.glob("*.dcm"))[SLICES]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def make_study(slices: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Study]:
    def make(edit: Callable[[Dataset, int], Dataset | None] | None = None, *, count: int = 12) -> Study:
        folder = copy_with_new_uids(slices, tmp_path_factory.mktemp("study"))
        for index, path in enumerate(sorted(folder.glob("*.dcm"))):
            if index >= count:
                path.unlink()
            elif edit is not None:
                ds = pydicom.dcmread(path)
                edited = edit(ds, index)
                if edited is not None:
                    edited.save_as(path, enforce_file_format=True)
        first = pydicom.dcmread(next(iter(sorted(folder.glob("*.dcm")))), stop_before_pixels=True)
        return Study(folder, str(first.StudyInstanceUID), str(first.SeriesInstanceUID))

    return make


#: storescu's option to propose a transfer syntax: it proposes only the uncompressed ones
#: otherwise, and cannot turn JPEG-LS, RLE or JPEG 2000 into one of them
STORESCU_PROPOSE = {
    JPEGLSLossless: "-xt",
    JPEGExtended12Bit: "-xx",
    RLELossless: "-xr",
    JPEG2000Lossless: "-xv",
}


def send(node: RunningNode, folder: Path) -> str:
    """C-STORE a study's files with storescu in the transfer syntax they are stored in (a study
    holds one), as a modality sends what it holds; returns the Study Instance UID."""
    first = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0], stop_before_pixels=True)
    propose = STORESCU_PROPOSE.get(first.file_meta.TransferSyntaxUID)
    # -R: a presentation context for each SOP class found (the SEG is not in storescu's list)
    command = [
        "storescu",
        "-aet",
        "HOSTILE",
        "-aec",
        "AINODE",
        "-R",
        *([propose] if propose else []),
        "+sd",
        "+r",
    ]
    completed = subprocess.run(
        [*command, "127.0.0.1", str(node.dicom_port), str(folder)],
        capture_output=True,
        text=True,
        env=dict(os.environ, TCP_NODELAY="1"),  # DCMTK waits on Nagle's algorithm without it
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return str(first.StudyInstanceUID)


def node_results(node: RunningNode, study_uid: str) -> list[str]:
    """Modalities of the node's own result series in the study."""
    return sorted(
        series["MainDicomTags"]["Modality"]
        for series in node.study_series(study_uid)
        if series["MainDicomTags"].get("Modality") in NODE_RESULTS
        and series["MainDicomTags"].get("Manufacturer", "") == "Orthanc AI node"
    )


def stored_transfer_syntax(node: RunningNode, study_uid: str) -> str:
    series = next(s for s in node.study_series(study_uid) if s["MainDicomTags"].get("Modality") == "CT")
    return node.client.get_bytes(f"/instances/{series['Instances'][0]}/metadata/TransferSyntax").decode()


# --------------------------------------------------------------------------------------------
# The studies, edited
# --------------------------------------------------------------------------------------------


def without_position(ds: Dataset, index: int) -> Dataset:
    del ds.ImagePositionPatient
    return ds


def duplicate_position(ds: Dataset, index: int) -> Dataset | None:
    if index != 6:
        return None
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y, z - 1.5]  # where slice 5 is: the same place twice
    return ds


def mixed_orientation(ds: Dataset, index: int) -> Dataset | None:
    if index % 5 != 2:
        return None
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal reformats mixed in, unmarked
    return ds


def gantry_tilt(ds: Dataset, index: int) -> Dataset:
    # the table moves along z, the gantry is tilted 15°: each slice slides along y
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y + z * np.tan(np.radians(15)), z]
    return ds


def with_a_localizer(ds: Dataset, index: int) -> Dataset | None:
    if index != 0:
        return None
    # the first slice becomes the coronal scout the series was planned on; 11 axial slices stay
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.InstanceNumber = 1000
    return ds


def unusual_headers(ds: Dataset, index: int) -> Dataset:
    del ds.SliceThickness, ds.StudyID, ds.AccessionNumber
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    return ds


def zero_pixel_spacing(ds: Dataset, index: int) -> Dataset:
    ds.PixelSpacing = [0, 0]
    return ds


def jpeg_2000(ds: Dataset, index: int) -> Dataset:
    """Lossless JPEG 2000 (the 5/3 wavelet) by Pillow's OpenJPEG: DCMTK has no encoder for it."""
    from PIL import Image

    buffer = io.BytesIO()
    # 16-bit grey (Pillow's I;16) and the reversible wavelet: the stored values come back exactly
    Image.fromarray(ds.pixel_array.astype(np.uint16)).save(buffer, format="JPEG2000", no_jp2=True)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    return ds


def compressed_with(tool: str, *options: str) -> Callable[[Study], None]:
    """Compress a study's files in place with a DCMTK tool (dcmcjpls, dcmcjpeg, dcmcrle)."""

    def compress(study: Study) -> None:
        for path in sorted(study.folder.glob("*.dcm")):
            subprocess.run([tool, *options, str(path), str(path)], check=True, capture_output=True)

    return compress


def foreign_seg(study: Study) -> None:
    """Another vendor's SEG of the same slices, stored in the study beside them."""
    datasets = [pydicom.dcmread(p) for p in sorted(study.folder.glob("*.dcm"))]
    volume = build_volume(datasets)
    pipeline = CtTissueSegmentation()
    seg = build_segmentation(
        source_images=datasets,
        volume=volume,
        segments=pipeline.segments,
        voxels=SegmentVoxels.from_result(volume.shape, pipeline.segments, pipeline.run(volume)),
        algorithm=AlgorithmInfo(name="other-vendor-ai", version="2.0"),
        device=DeviceInfo(
            manufacturer="Other AI Vendor",
            model_name="other",
            software_version="2.0",
            device_serial_number="OTHER-1",
        ),
        series_instance_uid=pydicom.uid.generate_uid(),
        sop_instance_uid=pydicom.uid.generate_uid(),
        series_number=500,
    )
    assert seg.SOPClassUID == SegmentationStorage
    seg.save_as(study.folder / "foreign-seg.dcm", enforce_file_format=True)


@dataclass(frozen=True)
class Case:
    edit: Callable[[Dataset, int], Dataset | None] | None = None
    #: a change to the whole study folder after the edits
    then: Callable[[Study], None] | None = None
    #: None: the job is done; else words its failure must hold
    fails_with: str | None = None


CASES: dict[str, Case] = {
    "no-image-position": Case(
        without_position, fails_with="have no Image Position (Patient) (0020,0032), which is needed"
    ),
    "duplicate-positions": Case(duplicate_position, fails_with="1 pair of slices share a position"),
    "mixed-orientations": Case(mixed_orientation, fails_with="more than one orientation"),
    "gantry-tilt": Case(gantry_tilt, fails_with="a tilt of 15.0°), as with gantry tilt"),
    "zero-pixel-spacing": Case(zero_pixel_spacing, fails_with="Pixel Spacing (0028,0030) is 0\\0"),
    "localizer-in-series": Case(with_a_localizer),
    "unusual-headers": Case(unusual_headers),
    "jpeg-ls": Case(then=compressed_with("dcmcjpls")),
    "jpeg-extended-12-bit": Case(then=compressed_with("dcmcjpeg", "+ee")),
    "rle": Case(then=compressed_with("dcmcrle")),
    "jpeg-2000": Case(jpeg_2000),
    "foreign-seg": Case(then=foreign_seg),
}


@pytest.fixture(scope="module")
def outcomes(shared_node: RunningNode, make_study) -> dict[str, tuple[Study, list[dict[str, Any]]]]:
    """Every case sent at once, as a PACS would; then each study's jobs once all are finished."""
    studies = {}
    for name, case in CASES.items():
        study = make_study(case.edit)
        if case.then is not None:
            case.then(study)
        send(shared_node, study.folder)
        studies[name] = study
    return {name: (study, shared_node.wait_for_jobs(study.uid)) for name, study in studies.items()}


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.fails_with])
def test_an_unusable_series_fails_its_one_job_with_the_reason(shared_node, outcomes, name: str) -> None:
    study, jobs = outcomes[name]
    assert [(job["pipeline_name"], job["status"]) for job in jobs] == [("ct-tissue", "failed")], jobs
    error = jobs[0]["error"]
    assert CASES[name].fails_with in error
    assert study.series_uid in error  # the admin can find the series
    assert "internal error" not in error and "Traceback" not in error
    assert node_results(shared_node, study.uid) == []


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if not case.fails_with])
def test_an_unusual_but_usable_series_gets_one_set_of_results(shared_node, outcomes, name: str) -> None:
    study, jobs = outcomes[name]
    assert [(job["pipeline_name"], job["status"]) for job in jobs] == [("ct-tissue", "done")], jobs
    assert jobs[0]["result"]["source_series_instance_uid"] == study.series_uid
    assert node_results(shared_node, study.uid) == sorted(NODE_RESULTS)


def test_the_localizer_is_left_out_and_the_job_says_so(outcomes) -> None:
    _, (job,) = outcomes["localizer-in-series"]
    assert (job["result"]["source_instances"], job["result"]["localizers_left_out"]) == (12, 1)


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("jpeg-ls", "1.2.840.10008.1.2.4.80"),
        ("jpeg-extended-12-bit", "1.2.840.10008.1.2.4.51"),
        ("rle", "1.2.840.10008.1.2.5"),
        ("jpeg-2000", "1.2.840.10008.1.2.4.90"),
    ],
)
def test_compressed_studies_were_stored_compressed_so_the_worker_decoded_them(
    shared_node, outcomes, name: str, syntax: str
) -> None:
    study, _ = outcomes[name]
    assert stored_transfer_syntax(shared_node, study.uid) == syntax


def test_the_foreign_seg_stays_and_is_no_input(shared_node, outcomes) -> None:
    study, (job,) = outcomes["foreign-seg"]
    segs = [s for s in shared_node.study_series(study.uid) if s["MainDicomTags"].get("Modality") == "SEG"]
    assert sorted(s["MainDicomTags"].get("Manufacturer", "") for s in segs) == [
        "Orthanc AI node",
        "Other AI Vendor",
    ]
    assert job["result"]["source_series_instance_uid"] == study.series_uid


# --------------------------------------------------------------------------------------------
# Sent twice, cut off: the study changes after its job
# --------------------------------------------------------------------------------------------


def wait_past_stable(node: RunningNode) -> None:
    """Long enough for Orthanc to call the study stable again and the follower to route it."""
    time.sleep(node.stable_age + 4)


def test_a_study_sent_twice_gets_one_job_and_one_set_of_results(shared_node, make_study) -> None:
    study = make_study()
    (first,) = shared_node.wait_for_jobs(send(shared_node, study.folder))

    send(shared_node, study.folder)
    wait_past_stable(shared_node)

    (job,) = shared_node.wait_for_jobs(study.uid)
    assert (job["id"], job["status"]) == (first["id"], "done")
    assert node_results(shared_node, study.uid) == sorted(NODE_RESULTS)


def send_then_abort(node: RunningNode, paths: list[Path]) -> None:
    """C-STORE ``paths`` one by one, then abort the association (A-ABORT) instead of releasing
    it: the network or the sender died mid-transfer."""
    ae = AE(ae_title="CUTOFF")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="AINODE")
    assert assoc.is_established
    for path in paths:
        status = assoc.send_c_store(pydicom.dcmread(path))
        assert status.Status == 0x0000
    assoc.abort()


def test_a_transfer_cut_off_leaves_results_of_what_arrived_and_the_rest_arriving_is_reported(
    shared_node, make_study
) -> None:
    study = make_study(count=14)
    paths = sorted(study.folder.glob("*.dcm"))
    send_then_abort(shared_node, paths[:10])

    (job,) = shared_node.wait_for_jobs(study.uid)
    assert (job["status"], job["result"]["source_instances"]) == ("done", 10), job

    send(shared_node, study.folder)  # the sender tries again: the 10 are there already
    wait_past_stable(shared_node)

    assert [j["id"] for j in shared_node.wait_for_jobs(study.uid)] == [job["id"]]
    assert node_results(shared_node, study.uid) == sorted(NODE_RESULTS)
    expected = (
        f"series {study.series_uid} has 14 instances now, but job {job['id']} (ct-tissue) ran on the 10"
    )
    assert expected in logs(shared_node)


def test_a_transfer_with_a_hole_fails_naming_the_missing_slices(shared_node, make_study) -> None:
    study = make_study(count=14)
    paths = sorted(study.folder.glob("*.dcm"))
    send_then_abort(shared_node, paths[:5] + paths[7:])  # sent in parallel, two never arrived

    (job,) = shared_node.wait_for_jobs(study.uid)
    assert job["status"] == "failed"
    assert "missing slice(s) in a stack spaced 1.50 mm: 2 between instance" in job["error"]


def logs(node: RunningNode) -> str:
    return "".join(path.read_text(errors="replace") for path in (node.folder / "var" / "logs").glob("*.log"))


# --------------------------------------------------------------------------------------------
# And then: the node is healthy and processes the next study
# --------------------------------------------------------------------------------------------


def test_the_node_is_healthy_and_processes_a_normal_study_afterwards(
    shared_node, make_study, outcomes
) -> None:
    health = shared_node.client.get_json("/ai/health")
    assert health["status"] == "ok"

    study = make_study()
    (job,) = shared_node.wait_for_jobs(send(shared_node, study.folder))

    assert job["status"] == "done"
    assert node_results(shared_node, study.uid) == sorted(NODE_RESULTS)
