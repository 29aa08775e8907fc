"""The planar TID 1500 Measurement Report (node.results.planar_sr): outlines, values, round trip,
dciodvfy and dcmqi. PixelMed's SR validator runs on it in test_results_products."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from scipy import ndimage
from skimage.draw import polygon2mask

from node.errors import ResultValidationError
from node.imaging.series import build_volume
from node.imaging.volume import Volume
from node.pipeline.base import Code, Measurement, PipelineResult, SegmentSpec
from node.pipeline.voxels import SegmentVoxels
from node.results.measure import SegmentMeasurements, measure_segments
from node.results.outline import PlanarOutline, largest_outline, segment_outlines
from node.results.planar_sr import build_planar_measurement_report
from node.results.report import image_library
from node.results.seg import AlgorithmInfo, DeviceInfo, segment_tracking_uid
from node.results.validate import require_valid
from tests.dcmqi import read_sr_metadata
from tests.factories import make_series

TISSUE = Code("85756007", "SCT", "Tissue")
SEGMENTS = (
    SegmentSpec(label="fat", category=TISSUE, type=Code("55603005", "SCT", "Fat"), rgb=(230, 220, 70)),
    SegmentSpec(
        label="muscle",
        category=TISSUE,
        type=Code("91727004", "SCT", "Muscle"),
        rgb=(190, 40, 40),
        measurements=(Measurement.MEAN_INTENSITY,),
    ),
    SegmentSpec(label="bone", category=TISSUE, type=Code("3138006", "SCT", "Bone"), rgb=(240, 240, 240)),
)
ALGORITHM = AlgorithmInfo(name="ct-tissue", version="1.4.0")
DEVICE = DeviceInfo.for_node(device_serial_number="node-test-03")
SPACING = (3.0, 0.75, 0.6)
SEG_INSTANCE_UID = generate_uid()
AREA, VOLUME = "42798000", "118565006"


@dataclass
class Case:
    datasets: list[Dataset]
    volume: Volume
    masks: tuple[np.ndarray, ...]
    outlines: tuple[PlanarOutline | None, ...]
    measurements: list[SegmentMeasurements]


def _case(empty: tuple[str, ...] = ()) -> Case:
    shape = (8, 32, 40)
    stored = np.random.default_rng(5).integers(800, 1300, size=shape).astype(np.int16)
    datasets = make_series(stored, spacing=SPACING)
    volume = build_volume(datasets)
    masks = {s.label: np.zeros(shape, dtype=bool) for s in SEGMENTS}
    masks["fat"][1:5, 2:20, 3:12] = True
    masks["fat"][3, 2:22, 3:14] = True  # slice 3 is the fat's largest
    masks["muscle"][4:8, 15:30, 10:31] = True
    masks["muscle"][6, 0:3, 36:40] = True  # a second, smaller region on the largest slice
    masks["muscle"][6, 15:31, 10:32] = True
    masks["bone"][0, 0:3, 0:3] = True
    for label in empty:
        masks[label][:] = False
    voxels = SegmentVoxels.from_result(shape, SEGMENTS, PipelineResult(masks=masks))
    return Case(
        datasets,
        volume,
        tuple(masks[s.label] for s in SEGMENTS),
        segment_outlines(voxels, SPACING[1:]),
        measure_segments(volume, SEGMENTS, voxels),
    )


def _outline(mask: np.ndarray, spacing: tuple[float, float]) -> PlanarOutline | None:
    """The outline of a one-segment result whose mask is ``mask``."""
    voxels = SegmentVoxels.from_result(mask.shape, SEGMENTS[:1], PipelineResult(masks={"fat": mask}))
    return largest_outline(voxels, 1, spacing)


def _build(case: Case, *, measurements=None, tracking_uids=None) -> hd.sr.Comprehensive3DSR:
    by_uid = {ds.SOPInstanceUID: ds for ds in case.datasets}
    outlined = sorted({o.slice_index for o in case.outlines if o is not None})
    return build_planar_measurement_report(
        source_images=case.datasets,
        volume=case.volume,
        segments=SEGMENTS,
        outlines=case.outlines,
        library=image_library([by_uid[case.volume.source_instance_uids[k]] for k in outlined]),
        measurements=case.measurements if measurements is None else measurements,
        tracking_uids=tracking_uids or [segment_tracking_uid(SEG_INSTANCE_UID, n) for n in (1, 2, 3)],
        algorithm=ALGORITHM,
        device=DEVICE,
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
    )


def _write_and_read(sr: hd.sr.Comprehensive3DSR, tmp_path: Path) -> tuple[Path, hd.sr.Comprehensive3DSR]:
    path = tmp_path / "planar-sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).SOPInstanceUID == sr.SOPInstanceUID
    return path, hd.sr.srread(path)


def _groups(sr: hd.sr.Comprehensive3DSR) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    return hd.sr.MeasurementReport.from_sequence(sr.content).get_planar_roi_measurement_groups()


def _items(dataset: Dataset, code_value: str) -> list[Dataset]:
    """Content items anywhere below ``dataset`` whose concept name has ``code_value``."""
    found = []
    for item in dataset.get("ContentSequence", []):
        if "ConceptNameCodeSequence" in item and item.ConceptNameCodeSequence[0].CodeValue == code_value:
            found.append(item)
        found.extend(_items(item, code_value))
    return found


def _rasterize(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centres the polyline encloses; DICOM (column, row) to array (row, column)."""
    return polygon2mask(shape, points[:, ::-1] - 0.5)


# -- the outline ----------------------------------------------------------------------------


def _ring_and_speck() -> np.ndarray:
    """Slice 1 holds a ring (with a hole) touching the top border and a single pixel apart."""
    mask = np.zeros((3, 12, 14), dtype=bool)
    mask[0, 5:8, 5:8] = True
    mask[1, 0:7, 2:9] = True
    mask[1, 2:4, 4:6] = False  # the hole
    mask[1, 10, 12] = True  # the speck, 8-connected to nothing
    return mask


def test_outline_encloses_exactly_the_largest_region_with_holes_filled() -> None:
    mask = _ring_and_speck()

    outline = _outline(mask, (1.0, 1.0))

    assert outline is not None and outline.slice_index == 1
    expected = np.zeros((12, 14), dtype=bool)
    expected[0:7, 2:9] = True
    assert np.array_equal(_rasterize(outline.points, (12, 14)), expected)


def test_outline_vertices_lie_halfway_between_inside_and_outside_pixel_centres() -> None:
    mask = _ring_and_speck()
    region = ndimage.binary_fill_holes(mask[1] & ~(np.indices(mask[1].shape)[0] == 10))
    padded = np.pad(region, 1)

    outline = _outline(mask, (1.0, 1.0))

    assert outline is not None
    for x, y in outline.points:
        row, column = y - 0.5 + 1, x - 0.5 + 1  # index in the padded array
        if row == int(row):  # on a row: between two columns
            pair = padded[int(row), int(np.floor(column))], padded[int(row), int(np.ceil(column))]
        else:
            assert column == int(column)
            pair = padded[int(np.floor(row)), int(column)], padded[int(np.ceil(row)), int(column)]
        assert sorted(pair) == [False, True], (x, y)


def test_outline_is_closed_and_uses_the_pixel_corner_origin_of_ps3_3() -> None:
    # One pixel at row 2, column 5: its centre is (5.5, 2.5) in (column, row) image
    # coordinates, and the iso-line at 0.5 passes halfway to each 4-neighbour's centre.
    mask = np.zeros((1, 6, 8), dtype=bool)
    mask[0, 2, 5] = True

    outline = _outline(mask, (1.0, 1.0))

    assert outline is not None
    assert np.array_equal(outline.points[0], outline.points[-1])
    corners = {(5.5, 2.0), (6.0, 2.5), (5.5, 3.0), (5.0, 2.5)}
    assert corners <= {tuple(p) for p in outline.points}


def test_an_outline_of_four_corners_gets_a_fifth_so_ohif_does_not_take_it_for_a_rectangle() -> None:
    # OHIF 3.13 re-reads closed polylines of 4 or 5 points as its own Rectangle ROI; the
    # middle of the longest edge keeps the shape and makes it 6.
    mask = np.zeros((1, 6, 8), dtype=bool)
    mask[0, 2, 5] = True

    outline = _outline(mask, (1.0, 1.0))

    assert outline is not None and len(outline.points) == 6
    first, second, third = outline.points[0], outline.points[1], outline.points[2]
    assert np.allclose(second, (first + third) / 2)


def test_area_is_the_regions_pixels_without_its_holes_in_square_millimetres() -> None:
    # the ring of slice 1: 7 x 7 pixels less its 2 x 2 hole, each pixel 0.75 mm x 0.6 mm
    outline = _outline(_ring_and_speck(), (0.75, 0.6))

    assert outline is not None
    assert outline.area_mm2 == pytest.approx((49 - 4) * 0.75 * 0.6)


def test_straight_runs_of_the_outline_have_no_extra_vertices() -> None:
    # A 4 x 3 pixel rectangle: the iso-line has 4 sides and 4 cut corners.
    mask = np.zeros((1, 10, 10), dtype=bool)
    mask[0, 2:6, 3:6] = True

    outline = _outline(mask, (1.0, 1.0))

    assert outline is not None
    assert len(outline.points) == 9  # 8 corners, the first repeated to close the polyline


def test_empty_mask_has_no_outline() -> None:
    assert _outline(np.zeros((2, 4, 4), dtype=bool), (1.0, 1.0)) is None


# -- the report -----------------------------------------------------------------------------


def test_one_planar_group_per_non_empty_segment_with_polyline_on_its_largest_slice(tmp_path: Path) -> None:
    case = _case()

    _, sr = _write_and_read(_build(case), tmp_path)

    groups = _groups(sr)
    assert [g.tracking_identifier for g in groups] == ["fat", "muscle", "bone"]
    for group, outline in zip(groups, case.outlines, strict=True):
        assert outline is not None
        roi = group.roi
        assert isinstance(roi, hd.sr.ImageRegion)
        assert roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        assert np.allclose(roi.value, outline.points)
        source = roi.ContentSequence[0].ReferencedSOPSequence[0]
        assert source.ReferencedSOPInstanceUID == case.volume.source_instance_uids[outline.slice_index]
        assert source.ReferencedSOPClassUID == case.datasets[0].SOPClassUID


def test_polyline_read_back_encloses_the_largest_region_on_the_chosen_slice(tmp_path: Path) -> None:
    case = _case()

    _, sr = _write_and_read(_build(case), tmp_path)

    muscle = _groups(sr)[1]
    enclosed = _rasterize(np.asarray(muscle.roi.value, dtype=float), case.volume.shape[1:])
    expected = np.zeros(case.volume.shape[1:], dtype=bool)
    expected[15:31, 10:32] = True  # slice 6; the 3 x 4 region in its corner is smaller
    assert np.array_equal(enclosed, expected)
    source = muscle.roi.ContentSequence[0].ReferencedSOPSequence[0]
    assert source.ReferencedSOPInstanceUID == case.volume.source_instance_uids[6]


def test_groups_carry_area_and_the_whole_segments_volume(tmp_path: Path) -> None:
    case = _case()

    _, sr = _write_and_read(_build(case), tmp_path)

    fat = {m.name.value: (m.value, m.unit.value) for m in _groups(sr)[0].get_measurements()}
    # slice 3 of the fat: 20 x 11 pixels of 0.75 mm x 0.6 mm
    assert fat[AREA] == (pytest.approx(20 * 11 * 0.75 * 0.6, rel=1e-6), "mm2")
    assert fat[VOLUME] == (pytest.approx(case.measurements[0].volume_ml, rel=1e-6), "ml")


def test_segment_that_asks_for_no_volume_has_only_its_area(tmp_path: Path) -> None:
    _, sr = _write_and_read(_build(_case()), tmp_path)

    muscle = _groups(sr)[1]
    assert [m.name.value for m in muscle.get_measurements()] == [AREA]


def test_groups_share_the_seg_segments_tracking_uid_and_name_the_algorithm(tmp_path: Path) -> None:
    _, sr = _write_and_read(_build(_case()), tmp_path)

    for number, group in enumerate(_groups(sr), start=1):
        assert group.tracking_uid == segment_tracking_uid(SEG_INSTANCE_UID, number)
        assert group.finding_type.value == SEGMENTS[number - 1].type.value
        assert group.finding_category.value == TISSUE.value
        for measurement in group.get_measurements():
            names = [i.TextValue for i in _items(measurement[0], "111001")]
            versions = [i.TextValue for i in _items(measurement[0], "111003")]
            assert (names, versions) == (["ct-tissue"], ["1.4.0"])


def test_empty_segment_has_no_group(tmp_path: Path) -> None:
    _, sr = _write_and_read(_build(_case(empty=("muscle",))), tmp_path)

    assert [g.tracking_identifier for g in _groups(sr)] == ["fat", "bone"]


def test_the_image_library_lists_the_outlined_slices_and_the_evidence_the_series(tmp_path: Path) -> None:
    case = _case()

    _, sr = _write_and_read(_build(case), tmp_path)

    outlined = {case.volume.source_instance_uids[k] for k in (3, 6, 0)}
    evidence = {uid for _, _, uid, _ in sr.get_evidence(current_procedure_only=True)}
    assert evidence == set(case.volume.source_instance_uids)
    library_group = _items(hd.sr.MeasurementReport.from_sequence(sr.content)[0], "111028")[0]
    library = {
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for entry in library_group.ContentSequence
        for item in entry.ContentSequence
        if item.ValueType == "IMAGE"
    }
    assert library == outlined


def test_header_and_procedure(tmp_path: Path) -> None:
    case = _case()

    _, sr = _write_and_read(_build(case), tmp_path)

    procedure = hd.sr.MeasurementReport.from_sequence(sr.content)[0].ContentSequence
    reported = next(i for i in procedure if i.ConceptNameCodeSequence[0].CodeValue == "121058")
    assert (
        reported.ConceptCodeSequence[0].CodeValue,
        reported.ConceptCodeSequence[0].CodingSchemeDesignator,
    ) == (
        "25045-6",
        "LN",
    )
    assert (sr.Modality, sr.SOPClassUID) == ("SR", pydicom.uid.Comprehensive3DSRStorage)
    assert (sr.SeriesDescription, sr.SeriesNumber) == ("AI ROI ct-tissue", 9903)
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == (
        "COMPLETE",
        "UNVERIFIED",
        "PRELIMINARY",
    )
    assert sr.StudyInstanceUID == case.datasets[0].StudyInstanceUID


def test_all_empty_segments_are_rejected() -> None:
    with pytest.raises(ResultValidationError, match="at least one segment with voxels"):
        _build(_case(empty=("fat", "muscle", "bone")))


def test_measurements_that_do_not_match_the_segments_are_rejected() -> None:
    case = _case()
    swapped = [dataclasses.replace(case.measurements[0], label="muscle"), *case.measurements[1:]]

    with pytest.raises(ResultValidationError, match=r"declared \[\(1, 'fat'\)"):
        _build(case, measurements=swapped)


def test_dciodvfy_finds_no_errors() -> None:
    report = require_valid(_build(_case()), "PLANAR-SR")

    assert report.errors == ()
    assert report.warnings == ()


def test_dcmqi_reads_the_groups_and_their_values(tmp_path: Path) -> None:
    case = _case()
    path, _ = _write_and_read(_build(case), tmp_path)

    metadata = read_sr_metadata(path, tmp_path / "planar.json")

    read = {
        group["TrackingIdentifier"]: {
            item["quantity"]["CodeValue"]: (float(item["value"]), item["units"]["CodeValue"])
            for item in group["measurementItems"]
        }
        for group in metadata["Measurements"]
    }
    assert set(read) == {"fat", "muscle", "bone"}
    assert read["fat"][VOLUME] == (pytest.approx(case.measurements[0].volume_ml), "ml")
    assert read["fat"][AREA] == (pytest.approx(20 * 11 * 0.75 * 0.6), "mm2")
    # dcmqi has no field for the SCOORD: it reads the group's values, not its outline
    assert all("ReferencedSegment" not in group for group in metadata["Measurements"])
    # dcmqi lists the evidence as its image library: the whole source series
    assert set(metadata["imageLibrary"]) == set(case.volume.source_instance_uids)
