"""A study stored in a real Orthanc comes back with one DICOM SEG and one TID 1500 SR."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass

from node.imaging.series import build_volume
from node.results.validate import validate_file
from pipelines.ct_tissue import CtTissueSegmentation
from tests.dcmqi import read_seg_masks, read_sr_volumes
from tests.integration.node_fixture import RunningNode

pytestmark = pytest.mark.integration


def _results(node: RunningNode, study_uid: str, tmp_path: Path) -> dict[str, list[Path]]:
    """Download the study's result instances: SEG, SR (volumetric) and PLANAR-SR."""
    found: dict[str, list[Path]] = {"SEG": [], "SR": [], "PLANAR-SR": []}
    for series in node.study_series(study_uid):
        tags = series["MainDicomTags"]
        modality = tags.get("Modality")
        if modality == "SR" and tags.get("SeriesDescription", "").startswith("AI ROI"):
            modality = "PLANAR-SR"
        if modality not in found:
            continue
        for instance_id in series["Instances"]:
            path = tmp_path / f"{modality}-{instance_id}.dcm"
            path.write_bytes(node.client.instance_file(instance_id))
            found[modality].append(path)
    return found


def _source_volume(folder: Path):
    return build_volume([pydicom.dcmread(p) for p in sorted(folder.iterdir()) if p.is_file()])


@pytest.fixture(scope="module")
def ct_processed(shared_node: RunningNode, ct_sample: Path, tmp_path_factory):
    from node.devtools.samples import copy_with_new_uids

    study = copy_with_new_uids(ct_sample, tmp_path_factory.mktemp("ct"))
    uid = shared_node.send(study)
    jobs = shared_node.wait_for_jobs(uid)
    return study, uid, jobs


def test_ct_job_is_done_by_the_ct_pipeline(ct_processed) -> None:
    _, _, jobs = ct_processed
    assert [(job["pipeline_name"], job["status"]) for job in jobs] == [("ct-tissue", "done")], jobs


def test_ct_study_holds_exactly_one_seg_and_one_sr_from_the_node(shared_node, ct_processed, tmp_path) -> None:
    _, uid, jobs = ct_processed
    results = _results(shared_node, uid, tmp_path)
    # the default results: the SR holds the outlines too, so no planar SR beside it
    assert {kind: len(paths) for kind, paths in results.items()} == {"SEG": 1, "SR": 1, "PLANAR-SR": 0}
    seg = pydicom.dcmread(results["SEG"][0])
    sr = pydicom.dcmread(results["SR"][0])
    assert seg.SOPInstanceUID == jobs[0]["result"]["seg"]["sop_instance_uid"]
    assert sr.SOPInstanceUID == jobs[0]["result"]["sr"]["sop_instance_uid"]
    assert seg.Manufacturer == sr.Manufacturer == "Orthanc AI node"


def test_ct_results_pass_dciodvfy(shared_node, ct_processed, tmp_path) -> None:
    _, uid, _ = ct_processed
    results = _results(shared_node, uid, tmp_path)
    for path in results["SEG"] + results["SR"] + results["PLANAR-SR"]:
        report = validate_file(path)
        assert report.errors == (), f"{path.name}: {report.errors}"


def test_ct_seg_read_by_dcmqi_equals_the_pipeline_mask(shared_node, ct_processed, tmp_path) -> None:
    study, uid, _ = ct_processed
    volume = _source_volume(study)
    expected = CtTissueSegmentation().run(volume).masks
    seg_path = _results(shared_node, uid, tmp_path)["SEG"][0]
    masks = read_seg_masks(seg_path, volume, tmp_path / "dcmqi")
    assert set(masks) == set(expected)
    for label, mask in expected.items():
        assert np.array_equal(masks[label], mask), f"segment {label} differs"


def test_ct_sr_read_by_dcmqi_gives_the_pipeline_volumes(shared_node, ct_processed, tmp_path) -> None:
    _, uid, jobs = ct_processed
    sr_path = _results(shared_node, uid, tmp_path)["SR"][0]
    volumes = read_sr_volumes(sr_path, tmp_path / "sr.json")
    # segments without voxels have no group (OHIF cannot place one); their 0 mL is in the result
    expected = {s["label"]: s["volume_ml"] for s in jobs[0]["result"]["segments"] if s["voxels"]}
    assert expected and volumes.keys() == expected.keys()
    for label, value in expected.items():
        assert volumes[label] == pytest.approx(value, abs=1e-2)


def test_a_standard_dicomweb_client_stores_a_study_and_gets_seg_and_sr_back(
    shared_node: RunningNode, ct_sample: Path, new_study, tmp_path: Path
) -> None:
    # A PACS or modality with a sender account: dicomweb-client's STOW-RS, no extra header.
    study = new_study(ct_sample)
    datasets = [pydicom.dcmread(path) for path in sorted(study.glob("*.dcm"))]
    sender = DICOMwebClient(
        f"{shared_node.url}/dicom-web",
        session=create_session_from_user_pass(*shared_node.credential("sender")),
    )
    answer = sender.store_instances(datasets)
    # Orthanc's answer may hold an empty FailedSOPSequence
    assert not answer.get("FailedSOPSequence")
    assert len(answer.ReferencedSOPSequence) == len(datasets)
    uid = datasets[0].StudyInstanceUID
    jobs = shared_node.wait_for_jobs(uid)
    assert [(job["pipeline_name"], job["status"]) for job in jobs] == [("ct-tissue", "done")], jobs
    # and a viewer's standard client finds the results beside the images
    viewer = DICOMwebClient(
        f"{shared_node.url}/dicom-web",
        session=create_session_from_user_pass(*shared_node.credential("viewer")),
    )
    modalities = sorted(
        series["00080060"]["Value"][0] for series in viewer.search_for_series(study_instance_uid=uid)
    )
    assert modalities == ["CT", "SEG", "SR"]


def test_storing_results_starts_no_new_job(shared_node, ct_processed) -> None:
    _, uid, _ = ct_processed
    # The results made the study stable again; wait past the stable age and a follower pass.
    time.sleep(shared_node.stable_age + 3)
    assert len(shared_node.jobs(study=uid)) == 1


def test_t1_mr_gets_a_plausible_brain_mask_on_the_mr_instances(
    shared_node, mr_sample, new_study, tmp_path
) -> None:
    study = new_study(mr_sample)
    uid = shared_node.send(study)
    jobs = shared_node.wait_for_jobs(uid)
    assert [(job["pipeline_name"], job["status"]) for job in jobs] == [("brain-extraction", "done")], jobs
    (brain,) = jobs[0]["result"]["segments"]
    assert brain["label"] == "Brain"
    # Colin27 is scaled to MNI space and deepbet's mask includes the surrounding CSF: MRIcron's
    # own ch2bet mask is 1737 mL (docs/pipelines.md).
    assert 1600 < brain["volume_ml"] < 2200
    results = _results(shared_node, uid, tmp_path)
    assert {kind: len(paths) for kind, paths in results.items()} == {"SEG": 1, "SR": 1, "PLANAR-SR": 0}
    mr_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in study.iterdir()}
    seg = pydicom.dcmread(results["SEG"][0])
    referenced = {
        frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for frame in seg.PerFrameFunctionalGroupsSequence
    }
    assert referenced and referenced <= mr_uids
    for path in results["SEG"] + results["SR"]:
        assert validate_file(path).errors == ()
    volume = _source_volume(study)
    masks = read_seg_masks(results["SEG"][0], volume, tmp_path / "dcmqi")
    assert masks["Brain"].sum() == brain["voxels"]
