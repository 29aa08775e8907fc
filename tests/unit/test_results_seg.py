"""The DICOM SEG the node writes (node.results.seg): built, written, read back, validated."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from node.config import SegmentationKind
from node.errors import ConfigurationError, InputSeriesError, PipelineError
from node.imaging.series import build_volume
from node.imaging.volume import Volume
from node.pipeline.base import Code, Measurement, PipelineResult, SegmentSpec
from node.pipeline.voxels import SegmentVoxels
from node.results.seg import (
    CONTENT_CREATOR_NAME,
    AlgorithmInfo,
    DeviceInfo,
    build_segmentation,
    content_label,
    display_color,
)
from node.results.validate import require_valid
from tests.dcmqi import read_seg
from tests.factories import AXIAL, CORONAL, make_series

ANATOMY = Code("123037004", "SCT", "Anatomical Structure")
ALTERED = Code("49755003", "SCT", "Morphologically Altered Structure")
SEGMENTS = (
    SegmentSpec(
        label="liver",
        category=ANATOMY,
        type=Code("10200004", "SCT", "Liver"),
        rgb=(221, 130, 101),
        measurements=(Measurement.VOLUME, Measurement.MEAN_INTENSITY),
        description="Whole liver",
    ),
    SegmentSpec(
        label="spleen",
        category=ANATOMY,
        type=Code("78961009", "SCT", "Spleen"),
        rgb=(157, 108, 162),
    ),
    SegmentSpec(label="lesion", category=ALTERED, type=Code("108369006", "SCT", "Neoplasm"), rgb=(255, 0, 0)),
)
ALGORITHM = AlgorithmInfo(name="abdomen-organs", version="2.1.0")
DEVICE = DeviceInfo.for_node(device_serial_number="node-test-01")


@dataclass
class Case:
    """A synthetic series, its volume, and a pipeline result on it."""

    datasets: list[Dataset]
    volume: Volume
    result: PipelineResult

    def stacked(self) -> np.ndarray:
        return np.stack([self.result.masks[s.label] for s in SEGMENTS], axis=-1)


def _case(orientation=AXIAL, shape=(12, 64, 64), spacing=(2.5, 0.7, 0.9)) -> Case:
    rng = np.random.default_rng(7)
    stored = rng.integers(900, 1200, size=shape).astype(np.int16)
    datasets = make_series(stored, spacing=spacing, orientation=orientation)
    volume = build_volume(datasets)
    liver = np.zeros(shape, dtype=bool)
    liver[2:7, 10:30, 5:40] = True
    liver[4, 12, 6] = False  # a hole, so frames are not all alike
    spleen = np.zeros(shape, dtype=bool)
    spleen[5:9, 25:50, 30:60] = True  # overlaps the liver: BINARY segments may overlap
    lesion = np.zeros(shape, dtype=bool)  # the pipeline found none
    return Case(datasets, volume, PipelineResult(masks={"liver": liver, "spleen": spleen, "lesion": lesion}))


def _build(case: Case, source_images=None, result=None, **options) -> hd.seg.Segmentation:
    result = case.result if result is None else result
    return build_segmentation(
        source_images=case.datasets if source_images is None else source_images,
        volume=case.volume,
        segments=SEGMENTS,
        voxels=SegmentVoxels.from_result(case.volume.shape, SEGMENTS, result),
        algorithm=ALGORITHM,
        device=DEVICE,
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        **options,
    )


def _write_and_read(seg: hd.seg.Segmentation, tmp_path: Path) -> hd.seg.Segmentation:
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).SOPInstanceUID == seg.SOPInstanceUID
    return hd.seg.segread(path)


def test_voxels_read_back_equal_masks_in_source_instance_order(tmp_path: Path) -> None:
    case = _case()
    shuffled = random.Random(3).sample(case.datasets, len(case.datasets))

    seg = _write_and_read(_build(case, source_images=shuffled), tmp_path)

    pixels = seg.get_pixels_by_source_instance(
        list(case.volume.source_instance_uids),
        segment_numbers=[1, 2, 3],
        assert_missing_frames_are_empty=True,
    )
    assert np.array_equal(pixels.astype(bool), case.stacked())


def test_packed_frames_fill_an_even_number_of_bytes_without_padding(tmp_path: Path) -> None:
    # 61×45 frames are 2745 bits; the 9 non-empty frames pack into 3089 bytes, which DICOM
    # pads to 3090 and dcmjs (OHIF) then refuses. Empty frames are kept to make it even.
    case = _case(shape=(12, 61, 45))

    seg = _build(case)

    frames = len(seg.PerFrameFunctionalGroupsSequence)
    assert frames > 9
    packed = math.ceil(frames * 61 * 45 / 8)
    assert len(seg.PixelData) == packed and packed % 2 == 0
    read = _write_and_read(seg, tmp_path)
    pixels = read.get_pixels_by_source_instance(
        list(case.volume.source_instance_uids), segment_numbers=[1, 2, 3]
    )
    assert np.array_equal(pixels.astype(bool), case.stacked())
    assert require_valid(seg, "SEG").errors == ()


def test_single_segment_seg_also_fills_an_even_number_of_bytes() -> None:
    case = _case(shape=(12, 61, 45))
    only = SEGMENTS[1:2]  # the spleen: 4 frames of 2745 bits pack into 1373 bytes
    result = PipelineResult(masks={only[0].label: case.result.masks[only[0].label]})

    seg = build_segmentation(
        source_images=case.datasets,
        volume=case.volume,
        segments=only,
        voxels=SegmentVoxels.from_result(case.volume.shape, only, result),
        algorithm=ALGORITHM,
        device=DEVICE,
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
    )

    frames = len(seg.PerFrameFunctionalGroupsSequence)
    assert frames > 4
    assert len(seg.PixelData) == math.ceil(frames * 61 * 45 / 8) and len(seg.PixelData) % 2 == 0
    assert seg.pixel_array.sum() == result.masks[only[0].label].sum()


def test_each_frame_references_the_source_instance_at_its_position(tmp_path: Path) -> None:
    case = _case()
    position_of = {ds.SOPInstanceUID: list(ds.ImagePositionPatient) for ds in case.datasets}

    seg = _write_and_read(_build(case), tmp_path)

    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        assert source.ReferencedSOPClassUID == case.datasets[0].SOPClassUID
        assert list(position) == pytest.approx(position_of[source.ReferencedSOPInstanceUID])


def test_empty_frames_are_omitted_and_empty_segment_is_still_declared(tmp_path: Path) -> None:
    case = _case()

    seg = _write_and_read(_build(case), tmp_path)

    non_empty_frames = sum(int(case.stacked()[:, :, :, s].any(axis=(1, 2)).sum()) for s in range(3))
    assert seg.NumberOfFrames == non_empty_frames
    assert [item.SegmentLabel for item in seg.SegmentSequence] == ["liver", "spleen", "lesion"]


def test_all_empty_result_still_makes_a_readable_seg(tmp_path: Path) -> None:
    case = _case()
    empty = PipelineResult(masks={s.label: np.zeros(case.volume.shape, dtype=bool) for s in SEGMENTS})

    seg = _write_and_read(_build(case, result=empty), tmp_path)

    pixels = seg.get_pixels_by_source_instance(list(case.volume.source_instance_uids))
    assert not pixels.any()


def test_segment_sequence_describes_each_segment_completely(tmp_path: Path) -> None:
    seg = _write_and_read(_build(_case()), tmp_path)

    liver = seg.SegmentSequence[0]
    algorithm = liver.SegmentationAlgorithmIdentificationSequence[0]
    family = algorithm.AlgorithmFamilyCodeSequence[0]
    category = liver.SegmentedPropertyCategoryCodeSequence[0]
    kind = liver.SegmentedPropertyTypeCodeSequence[0]
    assert (liver.SegmentNumber, liver.SegmentLabel, liver.SegmentDescription) == (
        1,
        "liver",
        "Whole liver",
    )
    assert (liver.SegmentAlgorithmType, liver.SegmentAlgorithmName) == (
        "AUTOMATIC",
        "abdomen-organs",
    )
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("abdomen-organs", "2.1.0")
    assert (family.CodeValue, family.CodingSchemeDesignator) == ("123110", "DCM")
    assert (category.CodeValue, category.CodingSchemeDesignator, category.CodeMeaning) == (
        "123037004",
        "SCT",
        "Anatomical Structure",
    )
    assert (kind.CodeValue, kind.CodeMeaning) == ("10200004", "Liver")
    assert liver.TrackingID == "liver" and liver.TrackingUID
    assert hd.color.CIELabColor.from_dicom_value(
        [int(v) for v in liver.RecommendedDisplayCIELabValue]
    ).to_rgb() == (221, 130, 101)


def test_header_names_the_node_the_pipeline_and_the_source_study(tmp_path: Path) -> None:
    case = _case()

    seg = _write_and_read(_build(case), tmp_path)

    source = case.datasets[0]
    assert (seg.Modality, seg.SegmentationType, seg.SeriesNumber, seg.InstanceNumber) == (
        "SEG",
        "BINARY",
        9901,
        1,
    )
    assert (seg.ContentLabel, seg.ContentDescription) == ("ABDOMEN_ORGANS", "abdomen-organs 2.1.0")
    assert seg.ContentCreatorName == CONTENT_CREATOR_NAME
    assert seg.SeriesDescription == "AI SEG abdomen-organs"
    assert (seg.Manufacturer, seg.ManufacturerModelName, seg.DeviceSerialNumber) == (
        DEVICE.manufacturer,
        DEVICE.model_name,
        "node-test-01",
    )
    assert seg.SoftwareVersions == DEVICE.software_version
    assert (seg.StudyInstanceUID, seg.PatientID, seg.AccessionNumber) == (
        source.StudyInstanceUID,
        source.PatientID,
        source.AccessionNumber,
    )
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID


def test_dciodvfy_finds_no_errors() -> None:
    report = require_valid(_build(_case()), "SEG")

    assert report.errors == ()
    assert report.warnings == ()


@pytest.mark.parametrize("orientation", [AXIAL, CORONAL], ids=["axial", "coronal"])
def test_dcmqi_reads_the_same_voxels_and_colours(orientation, tmp_path: Path) -> None:
    case = _case(orientation=orientation)
    _build(case).save_as(tmp_path / "seg.dcm", enforce_file_format=True)

    read_back = read_seg(tmp_path / "seg.dcm", case.volume, tmp_path / "itk")

    for number, spec in enumerate(SEGMENTS):
        assert np.array_equal(read_back.masks[spec.label], case.stacked()[..., number])
    assert read_back.colours == {s.label: s.rgb for s in SEGMENTS}


def test_display_colour_is_cielab_of_the_srgb_colour() -> None:
    # sRGB red is CIELab (53.2408, 80.0925, 67.2032) with the D65 white point (IEC 61966-2-1,
    # CIE 15); PS3.3 C.10.7.1.1 scales L* × 65535/100 and (a*, b*) + 128 × 65535/255. The
    # tolerance, 10 of 65535 (< 0.04 in a* or b*), covers highdicom's 4-digit sRGB matrix.
    red = SEGMENTS[2]
    lab = (53.2408, 80.0925, 67.2032)
    expected = (lab[0] * 65535 / 100, (lab[1] + 128) * 65535 / 255, (lab[2] + 128) * 65535 / 255)

    assert display_color(red).value == pytest.approx(expected, abs=10)


def test_content_label_is_a_valid_code_string() -> None:
    assert content_label("ct-tissue") == "CT_TISSUE"
    assert content_label("brain extraction v2 (beta)") == "BRAIN EXTRACTION"
    assert content_label("---") == "___"


def test_missing_source_image_is_named() -> None:
    case = _case()
    missing = case.datasets[3].SOPInstanceUID

    with pytest.raises(InputSeriesError, match=f"slice 3 \\(SOP Instance UID {missing}\\) is not among"):
        _build(case, source_images=case.datasets[:3] + case.datasets[4:])


def test_source_image_of_another_series_is_rejected() -> None:
    case = _case()
    stray = pydicom.Dataset(case.datasets[0])
    stray.SeriesInstanceUID = generate_uid()

    with pytest.raises(InputSeriesError, match="has SeriesInstanceUID"):
        _build(case, source_images=[stray, *case.datasets[1:]])


def test_missing_segment_mask_is_rejected() -> None:
    case = _case()
    masks = dict(case.result.masks)
    del masks["spleen"]

    with pytest.raises(PipelineError, match="no mask for its declared segment 'spleen'"):
        _build(case, result=PipelineResult(masks=masks))


def test_mask_of_wrong_shape_is_rejected() -> None:
    case = _case()
    masks = {**case.result.masks, "liver": np.zeros((12, 64, 63), dtype=bool)}

    with pytest.raises(PipelineError, match=r"'liver' has shape \(12, 64, 63\)"):
        _build(case, result=PipelineResult(masks=masks))


def test_colour_outside_srgb_range_is_rejected() -> None:
    spec = SegmentSpec(label="x", category=ANATOMY, type=ANATOMY, rgb=(256, 0, 0))

    with pytest.raises(PipelineError, match=r"colour \(256, 0, 0\); it must be three integers 0-255"):
        display_color(spec)


def test_device_info_rejects_an_overlong_model_name() -> None:
    with pytest.raises(ConfigurationError, match="ManufacturerModelName 'x+' has 65 characters"):
        DeviceInfo(manufacturer="m", model_name="x" * 65, software_version="1", device_serial_number="1")


def _highdicom_reference(
    case: Case, pixel_array: np.ndarray, seg: hd.seg.Segmentation
) -> hd.seg.Segmentation:
    """highdicom's own SEG of the same input: its default BINARY constructor, the reference."""
    by_uid = {ds.SOPInstanceUID: ds for ds in case.datasets}
    return hd.seg.Segmentation(
        source_images=[by_uid[uid] for uid in case.volume.source_instance_uids],
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=list(seg.SegmentSequence),
        series_instance_uid=seg.SeriesInstanceUID,
        series_number=seg.SeriesNumber,
        sop_instance_uid=seg.SOPInstanceUID,
        instance_number=1,
        manufacturer=seg.Manufacturer,
        manufacturer_model_name=seg.ManufacturerModelName,
        software_versions=seg.SoftwareVersions,
        device_serial_number=seg.DeviceSerialNumber,
    )


def _frames(seg: Dataset) -> list[tuple[str, tuple[float, ...], int, tuple[int, ...]]]:
    shared = seg.SharedFunctionalGroupsSequence[0]
    frames = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        identification = item if "SegmentIdentificationSequence" in item else shared
        frames.append(
            (
                item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID,
                tuple(float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient),
                int(identification.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
                tuple(item.FrameContentSequence[0].DimensionIndexValues),
            )
        )
    return frames


@pytest.mark.parametrize("kind", ["label map", "overlapping masks"])
def test_frames_equal_highdicoms_own_seg_of_the_same_input(kind: str, tmp_path: Path) -> None:
    case = _case()
    if kind == "label map":
        label_map = np.zeros(case.volume.shape, dtype=np.uint8)
        label_map[case.result.masks["liver"]] = 1
        label_map[case.result.masks["spleen"] & ~case.result.masks["liver"]] = 2
        result, reference_pixels = PipelineResult(label_map=label_map), label_map
    else:
        result, reference_pixels = case.result, case.stacked()

    ours = _write_and_read(_build(case, result=result), tmp_path)
    reference = _highdicom_reference(case, reference_pixels, ours)
    reference.save_as(tmp_path / "reference.dcm", enforce_file_format=True)
    reference = hd.seg.segread(tmp_path / "reference.dcm")

    assert ours.NumberOfFrames == reference.NumberOfFrames
    assert _frames(ours) == _frames(reference)
    assert ours.PixelData == reference.PixelData
    assert ours.SharedFunctionalGroupsSequence == reference.SharedFunctionalGroupsSequence
    assert ours.ReferencedSeriesSequence == reference.ReferencedSeriesSequence
    assert require_valid(ours, "SEG").errors == require_valid(reference, "SEG").errors == ()


def test_a_labelmap_seg_holds_the_label_map_and_is_valid(tmp_path: Path) -> None:
    case = _case()
    label_map = np.zeros(case.volume.shape, dtype=np.uint8)
    label_map[case.result.masks["liver"]] = 1
    label_map[case.result.masks["spleen"] & ~case.result.masks["liver"]] = 2

    seg = _write_and_read(
        _build(case, result=PipelineResult(label_map=label_map), segmentation_type=SegmentationKind.LABELMAP),
        tmp_path,
    )

    assert seg.SegmentationType == "LABELMAP"
    pixels = seg.get_pixels_by_source_instance(list(case.volume.source_instance_uids), combine_segments=True)
    assert np.array_equal(pixels, label_map)
    assert require_valid(seg, "SEG").errors == ()


def test_overlapping_segments_fall_back_to_a_binary_seg() -> None:
    seg = _build(_case(), segmentation_type=SegmentationKind.LABELMAP)

    assert seg.SegmentationType == "BINARY"
