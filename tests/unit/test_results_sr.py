"""The TID 1500 Measurement Report the node writes (node.results.sr): built, written, read back,
validated, read by dcmqi, and shaped as OHIF 3.13 needs (every segment's groups placed by an
outline)."""

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

from node.errors import PipelineError, ResultValidationError
from node.imaging.series import build_volume
from node.imaging.volume import Volume
from node.pipeline.base import Code, Finding, Measurement, PipelineResult, Quantity, SegmentSpec
from node.pipeline.voxels import SegmentVoxels
from node.results.measure import SegmentMeasurements, measure_segments
from node.results.outline import PlanarOutline, segment_outlines
from node.results.report import image_library
from node.results.seg import AlgorithmInfo, DeviceInfo, build_segmentation
from node.results.sr import build_measurement_report
from node.results.validate import require_valid
from tests.dcmqi import read_sr_metadata
from tests.factories import make_series

TISSUE = Code("85756007", "SCT", "Tissue")
SEGMENTS = (
    SegmentSpec(
        label="fat",
        category=TISSUE,
        type=Code("55603005", "SCT", "Fat"),
        rgb=(230, 220, 70),
        measurements=(Measurement.VOLUME, Measurement.MEAN_INTENSITY),
    ),
    SegmentSpec(
        label="muscle",
        category=TISSUE,
        type=Code("91727004", "SCT", "Muscle"),
        rgb=(190, 40, 40),
        measurements=(Measurement.VOLUME, Measurement.MEAN_INTENSITY),
    ),
    SegmentSpec(label="bone", category=TISSUE, type=Code("3138006", "SCT", "Bone"), rgb=(240, 240, 240)),
)
ALGORITHM = AlgorithmInfo(name="ct-tissue", version="1.4.0")
DEVICE = DeviceInfo.for_node(device_serial_number="node-test-02")


@dataclass
class Case:
    datasets: list[Dataset]
    volume: Volume
    segmentation: hd.seg.Segmentation
    measurements: list[SegmentMeasurements]
    outlines: tuple[PlanarOutline | None, ...]


def _case(modality: str = "CT", empty: tuple[str, ...] = ()) -> Case:
    shape, spacing = (8, 32, 32), (3.0, 0.75, 0.6)
    stored = np.random.default_rng(11).integers(800, 1300, size=shape).astype(np.int16)
    datasets = make_series(stored, spacing=spacing, modality=modality)
    volume = build_volume(datasets)
    masks = {s.label: np.zeros(shape, dtype=bool) for s in SEGMENTS}
    masks["fat"][1:5, 2:20, 3:12] = True
    masks["muscle"][4:8, 15:30, 10:31] = True
    masks["bone"][0, 0:3, 0:3] = True
    for label in empty:
        masks[label][:] = False
    voxels = SegmentVoxels.from_result(shape, SEGMENTS, PipelineResult(masks=masks))
    segmentation = build_segmentation(
        source_images=datasets,
        volume=volume,
        segments=SEGMENTS,
        voxels=voxels,
        algorithm=ALGORITHM,
        device=DEVICE,
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
    )
    return Case(
        datasets,
        volume,
        segmentation,
        measure_segments(volume, SEGMENTS, voxels),
        segment_outlines(voxels, spacing[1:]),
    )


def _outlined(case: Case) -> list[Dataset]:
    by_uid = {ds.SOPInstanceUID: ds for ds in case.datasets}
    slices = sorted({o.slice_index for o in case.outlines if o is not None})
    return [by_uid[case.volume.source_instance_uids[k]] for k in slices]


def _build(
    case: Case, *, segments=SEGMENTS, measurements=None, pipeline_result=None
) -> hd.sr.Comprehensive3DSR:
    return build_measurement_report(
        source_images=case.datasets,
        volume=case.volume,
        segmentation=case.segmentation,
        segments=segments,
        measurements=case.measurements if measurements is None else measurements,
        outlines=case.outlines,
        library=image_library(_outlined(case)),
        algorithm=ALGORITHM,
        device=DEVICE,
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        pipeline_result=pipeline_result,
    )


def _write_and_read(sr: hd.sr.Comprehensive3DSR, tmp_path: Path) -> tuple[Path, hd.sr.Comprehensive3DSR]:
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).SOPInstanceUID == sr.SOPInstanceUID
    return path, hd.sr.srread(path)


def _report(sr: hd.sr.Comprehensive3DSR) -> hd.sr.MeasurementReport:
    return hd.sr.MeasurementReport.from_sequence(sr.content)


def _code(concept) -> tuple[str, str, str]:
    return (concept.value, concept.scheme_designator, concept.meaning)


def _items(dataset: Dataset, code_value: str) -> list[Dataset]:
    """Content items anywhere below ``dataset`` whose concept name has ``code_value``."""
    found = []
    for item in dataset.get("ContentSequence", []):
        if "ConceptNameCodeSequence" in item and item.ConceptNameCodeSequence[0].CodeValue == code_value:
            found.append(item)
        found.extend(_items(item, code_value))
    return found


def test_one_volumetric_group_per_segment_with_its_measurements(tmp_path: Path) -> None:
    case = _case()

    _, sr = _write_and_read(_build(case), tmp_path)

    groups = _report(sr).get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["fat", "muscle", "bone"]
    for group, spec, measured in zip(groups, SEGMENTS, case.measurements, strict=True):
        values = {m.name.value: (m.value, m.unit.value) for m in group.get_measurements()}
        assert values["118565006"] == (pytest.approx(measured.volume_ml), "ml")
        assert _code(group.finding_type) == (spec.type.value, spec.type.scheme, spec.type.meaning)
        assert group.finding_category.value == spec.category.value
    fat_mean = _report(sr).get_volumetric_roi_measurement_groups()[0].get_measurements()[1]
    assert (fat_mean.name.value, fat_mean.unit.value, fat_mean.derivation.value) == (
        "112031",
        "[hnsf'U]",
        "373098007",
    )
    assert fat_mean.value == pytest.approx(case.measurements[0].mean_intensity)


def test_segment_without_mean_request_has_only_volume(tmp_path: Path) -> None:
    _, sr = _write_and_read(_build(_case()), tmp_path)

    bone = _report(sr).get_volumetric_roi_measurement_groups()[2]
    assert [m.name.value for m in bone.get_measurements()] == ["118565006"]


def test_empty_segment_has_no_group(tmp_path: Path) -> None:
    # OHIF 3.13 fails a whole SR with a group it cannot place by an outline; the zero volume is
    # in the job's result
    _, sr = _write_and_read(_build(_case(empty=("muscle",))), tmp_path)

    report = _report(sr)
    assert [g.tracking_identifier for g in report.get_volumetric_roi_measurement_groups()] == ["fat", "bone"]
    assert [g.tracking_identifier for g in report.get_planar_roi_measurement_groups()] == ["fat", "bone"]


def test_empty_segment_with_a_finding_of_the_pipeline_keeps_its_volumetric_group(tmp_path: Path) -> None:
    absent = Finding(
        name=Code("52988006", "SCT", "Lesion"), value=Code("2667000", "SCT", "Absent"), segment="muscle"
    )

    _, sr = _write_and_read(
        _build(_case(empty=("muscle",)), pipeline_result=PipelineResult(findings=(absent,))), tmp_path
    )

    muscle = _report(sr).get_volumetric_roi_measurement_groups()[1]
    assert muscle.tracking_identifier == "muscle"
    assert [(m.name.value, m.value) for m in muscle.get_measurements()] == [("118565006", 0.0)]


def test_every_segment_also_has_a_planar_group_with_its_outline_and_tracking_uid(tmp_path: Path) -> None:
    case = _case()

    _, sr = _write_and_read(_build(case), tmp_path)

    report = _report(sr)
    volumetric = report.get_volumetric_roi_measurement_groups()
    planar = report.get_planar_roi_measurement_groups()
    assert [g.tracking_uid for g in planar] == [g.tracking_uid for g in volumetric]
    for group, outline in zip(planar, case.outlines, strict=True):
        assert outline is not None
        assert np.allclose(group.roi.value, outline.points)
        image = group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        assert image == case.volume.source_instance_uids[outline.slice_index]
        assert [m.name.value for m in group.get_measurements()] == ["42798000"]  # area


def test_every_measurement_group_can_be_placed_as_ohif_places_them(tmp_path: Path) -> None:
    # OHIF 3.13 (extensions/cornerstone-dicom-sr) merges the groups of Imaging Measurements by
    # Tracking Unique Identifier and reads the merged measurement's coordinates from a top-level
    # SCOORD whose one child is the IMAGE it lies on; a measurement without one fails the SR.
    _, sr = _write_and_read(_build(_case()), tmp_path)

    measurements = _items(_report(sr)[0], "126010")[0]
    placed: dict[str, bool] = {}
    for group in measurements.ContentSequence:
        uid = _items(group, "112040")[0].UID
        scoords = [item for item in group.ContentSequence if item.ValueType == "SCOORD"]
        placed[uid] = placed.get(uid, False) or any(
            len(scoord.ContentSequence) == 1 and "ReferencedSOPSequence" in scoord.ContentSequence[0]
            for scoord in scoords
        )
    assert placed and all(placed.values())


def test_groups_reference_their_seg_segment_and_share_its_tracking_uid(tmp_path: Path) -> None:
    case = _case()

    _, sr = _write_and_read(_build(case), tmp_path)

    groups = _report(sr).get_volumetric_roi_measurement_groups()
    for number, group in enumerate(groups, start=1):
        segment = _items(group[0], "121191")[0].ReferencedSOPSequence[0]
        source_series = _items(group[0], "121232")[0]
        assert (segment.ReferencedSOPClassUID, segment.ReferencedSOPInstanceUID) == (
            case.segmentation.SOPClassUID,
            case.segmentation.SOPInstanceUID,
        )
        assert segment.ReferencedSegmentNumber == number
        assert source_series.UID == case.volume.series_instance_uid
        assert group.tracking_uid == case.segmentation.SegmentSequence[number - 1].TrackingUID


def test_algorithm_name_and_version_are_on_every_measurement(tmp_path: Path) -> None:
    _, sr = _write_and_read(_build(_case()), tmp_path)

    for group in _report(sr).get_volumetric_roi_measurement_groups():
        for measurement in group.get_measurements():
            names = [i.TextValue for i in _items(measurement[0], "111001")]
            versions = [i.TextValue for i in _items(measurement[0], "111003")]
            assert (names, versions) == (["ct-tissue"], ["1.4.0"])


def test_observer_is_the_node_and_procedure_is_ct(tmp_path: Path) -> None:
    _, sr = _write_and_read(_build(_case()), tmp_path)

    report = _report(sr)
    observer = report.get_observer_contexts()[0]
    attributes = observer.observer_identifying_attributes
    procedure = _items(report[0], "121058")[0].ConceptCodeSequence[0]
    assert observer.observer_type.value == "121007"  # DCM Device
    assert (attributes.uid, attributes.manufacturer_name, attributes.model_name) == (
        DEVICE.observer_uid,
        DEVICE.manufacturer,
        DEVICE.model_name,
    )
    assert (procedure.CodeValue, procedure.CodingSchemeDesignator) == ("25045-6", "LN")


def test_mr_report_uses_mr_procedure_and_signal_intensity(tmp_path: Path) -> None:
    _, sr = _write_and_read(_build(_case(modality="MR")), tmp_path)

    report = _report(sr)
    procedure = _items(report[0], "121058")[0].ConceptCodeSequence[0]
    mean = report.get_volumetric_roi_measurement_groups()[0].get_measurements()[1]
    assert procedure.CodeValue == "25056-3"
    assert (mean.name.value, mean.unit.value) == ("110852", "[arb'U]")


def test_evidence_lists_seg_and_every_source_image_and_the_library_the_outlined_ones(tmp_path: Path) -> None:
    case = _case()

    _, sr = _write_and_read(_build(case), tmp_path)

    evidence = {uid for _, _, uid, _ in sr.get_evidence(current_procedure_only=True)}
    library = _items(_report(sr)[0], "111028")[0]
    library_images = {
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for item in _items_of_type(library, "IMAGE")
    }
    assert evidence == {*case.volume.source_instance_uids, case.segmentation.SOPInstanceUID}
    assert library_images == {ds.SOPInstanceUID for ds in _outlined(case)}


def _items_of_type(dataset: Dataset, value_type: str) -> list[Dataset]:
    found = []
    for item in dataset.get("ContentSequence", []):
        if item.ValueType == value_type:
            found.append(item)
        found.extend(_items_of_type(item, value_type))
    return found


def test_header_names_the_node_and_a_new_series(tmp_path: Path) -> None:
    case = _case()

    _, sr = _write_and_read(_build(case), tmp_path)

    assert (sr.Modality, sr.SOPClassUID) == ("SR", pydicom.uid.Comprehensive3DSRStorage)
    assert (sr.SeriesDescription, sr.SeriesNumber) == ("AI SR ct-tissue", 9902)
    assert (sr.Manufacturer, sr.ManufacturerModelName, sr.DeviceSerialNumber) == (
        DEVICE.manufacturer,
        DEVICE.model_name,
        "node-test-02",
    )
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    assert sr.StudyInstanceUID == case.datasets[0].StudyInstanceUID
    assert sr.SeriesInstanceUID not in (
        case.volume.series_instance_uid,
        case.segmentation.SeriesInstanceUID,
    )


def test_dciodvfy_finds_no_errors() -> None:
    report = require_valid(_build(_case()), "SR")

    assert report.errors == ()
    assert report.warnings == ()


def test_dcmqi_reads_the_same_volumes_and_references(tmp_path: Path) -> None:
    case = _case()
    path, _ = _write_and_read(_build(case), tmp_path)

    metadata = read_sr_metadata(path, tmp_path / "sr.json")
    read = {}
    # the planar groups beside them reference no segment
    for group in (g for g in metadata["Measurements"] if "ReferencedSegment" in g):
        assert group["segmentationSOPInstanceUID"] == case.segmentation.SOPInstanceUID
        assert group["measurementAlgorithmIdentification"]["AlgorithmVersion"] == "1.4.0"
        volume = next(i for i in group["measurementItems"] if i["quantity"]["CodeValue"] == "118565006")
        read[group["ReferencedSegment"]] = (group["TrackingIdentifier"], float(volume["value"]))
    assert read == {m.segment_number: (m.label, pytest.approx(m.volume_ml)) for m in case.measurements}
    assert metadata["procedureReported"]["CodeValue"] == "25045-6"
    assert metadata["observerContext"]["DeviceObserverUID"] == DEVICE.observer_uid


def test_measurements_that_do_not_match_the_seg_are_rejected() -> None:
    case = _case()
    swapped = [dataclasses.replace(case.measurements[0], label="muscle"), *case.measurements[1:]]

    with pytest.raises(ResultValidationError, match="The SR would not match its SEG"):
        _build(case, measurements=swapped)


def test_mean_intensity_of_unknown_modality_is_rejected() -> None:
    case = _case()
    case.volume = dataclasses.replace(case.volume, modality="PT")

    with pytest.raises(PipelineError, match="no DICOM concept and unit for the intensity of modality 'PT'"):
        _build(case)


def test_pipeline_quantities_and_findings_are_written_into_their_groups(tmp_path: Path) -> None:
    case = _case()
    length = Code("410668003", "SCT", "Length")
    millimeter = Code("mm", "UCUM", "millimeter")
    present = Code("52101004", "SCT", "Present")
    lesion = Code("52988006", "SCT", "Lesion")
    result = PipelineResult(
        measurements={"fat": (Quantity(name=length, value=12.5, unit=millimeter),)},
        findings=(
            Finding(name=lesion, value=present, segment="muscle"),
            Finding(name=lesion, value=present),
        ),
    )
    sr = _build(case, pipeline_result=result)

    path, read = _write_and_read(sr, tmp_path)
    report = _report(read)
    fat, muscle, bone = report.get_volumetric_roi_measurement_groups()
    (fat_length,) = [m for m in fat.get_measurements() if m.name.value == length.value]
    assert fat_length.value == pytest.approx(12.5) and fat_length.unit.value == "mm"

    def lesions(group) -> list[str]:
        return [q.value.value for q in group.get_qualitative_evaluations() if q.name.value == lesion.value]

    assert lesions(muscle) == [present.value]
    assert lesions(bone) == []
    assert require_valid(read, "SR").errors == ()
    # one in the muscle group, one in the report's Qualitative Evaluations (TID 1500 row 12)
    assert len(_items(read, lesion.value)) == 2
    (evaluations,) = _items(read, "C0034375")
    assert [item.ConceptNameCodeSequence[0].CodeValue for item in evaluations.ContentSequence] == [
        lesion.value
    ]
    # dcmqi reads the pipeline's own quantity beside the node's measurements
    (fat_group, *_) = read_sr_metadata(path, tmp_path / "sr.json")["Measurements"]
    codes = [item["quantity"]["CodeValue"] for item in fat_group["measurementItems"]]
    assert length.value in codes
