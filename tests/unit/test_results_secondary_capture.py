"""The secondary-capture series (node.results.secondary_capture): pixels, legend, geometry,
round trip and dciodvfy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import ImageFont
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

from node.errors import ResultValidationError
from node.imaging.series import build_volume
from node.imaging.volume import Volume
from node.pipeline.base import Code, PipelineResult, SegmentSpec
from node.pipeline.voxels import SegmentVoxels
from node.results import secondary_capture
from node.results.measure import SegmentMeasurements, measure_segments
from node.results.secondary_capture import (
    CT_DEFAULT_WINDOW,
    FILL_OPACITY,
    NOTICE,
    LegendEntry,
    Window,
    annotation_layer,
    build_secondary_captures,
    window_for_series,
)
from node.results.seg import AlgorithmInfo, DeviceInfo
from node.results.validate import require_valid
from tests.factories import AXIAL, CORONAL, make_series
from tests.requirements import require_or_skip

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

ANATOMY = Code("123037004", "SCT", "Anatomical Structure")
SEGMENTS = (
    SegmentSpec(label="liver", category=ANATOMY, type=Code("10200004", "SCT", "Liver"), rgb=(221, 130, 101)),
    SegmentSpec(label="spleen", category=ANATOMY, type=Code("78961009", "SCT", "Spleen"), rgb=(60, 90, 220)),
)
ALGORITHM = AlgorithmInfo(name="abdomen-organs", version="2.1.0")
DEVICE = DeviceInfo.for_node(device_serial_number="node-test-04")
SHAPE = (5, 128, 128)
SPACING = (2.5, 0.7, 0.9)
#: stored value of the "body": 1024 + 60 = 60 HU after the factory's intercept of -1024
BODY_HU = 60.0


@dataclass
class Case:
    datasets: list[Dataset]
    volume: Volume
    voxels: SegmentVoxels
    measurements: list[SegmentMeasurements]


def _case(
    modality: str = "CT", orientation: Sequence[float] = AXIAL, body_part: str | None = "ABDOMEN"
) -> Case:
    stored = np.zeros(SHAPE, dtype=np.int16)
    stored[:, 40:120, 10:120] = 1024 + int(BODY_HU)  # air (stored 0, -1024 HU) around it
    datasets = make_series(stored, spacing=SPACING, orientation=orientation, modality=modality)
    for ds in datasets:
        if body_part:
            ds.BodyPartExamined = body_part
        ds.InstanceNumber = 100 - ds.InstanceNumber  # numbered against the slice order
    volume = build_volume(datasets)
    liver = np.zeros(SHAPE, dtype=bool)
    liver[1:4, 50:90, 20:70] = True
    spleen = np.zeros(SHAPE, dtype=bool)  # empty: still listed in the legend
    voxels = SegmentVoxels.from_result(
        SHAPE, SEGMENTS, PipelineResult(masks={"liver": liver, "spleen": spleen})
    )
    return Case(datasets, volume, voxels, measure_segments(volume, SEGMENTS, voxels))


def _build(case: Case, uids: Sequence[str] | None = None) -> list[hd.sc.SCImage]:
    return build_secondary_captures(
        source_images=case.datasets,
        volume=case.volume,
        segments=SEGMENTS,
        voxels=case.voxels,
        measurements=case.measurements,
        algorithm=ALGORITHM,
        device=DEVICE,
        series_instance_uid=generate_uid(),
        sop_instance_uids=[generate_uid() for _ in range(SHAPE[0])] if uids is None else uids,
    )


def _write_and_read(images: Sequence[Dataset], tmp_path: Path) -> list[Dataset]:
    read = []
    for number, image in enumerate(images):
        path = tmp_path / f"sc-{number}.dcm"
        image.save_as(path, enforce_file_format=True)
        read.append(pydicom.dcmread(path))
    return read


def test_one_image_per_slice_with_the_source_slices_geometry(tmp_path: Path) -> None:
    case = _case()

    images = _write_and_read(_build(case), tmp_path)

    assert len(images) == SHAPE[0]
    for image, source in zip(images, case.datasets, strict=True):
        assert image.SOPClassUID == SecondaryCaptureImageStorage
        assert (image.Rows, image.Columns, image.SamplesPerPixel) == (128, 128, 3)
        assert image.PhotometricInterpretation == "RGB"
        for keyword in (
            "FrameOfReferenceUID",
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "PixelSpacing",
            "SliceThickness",
            "InstanceNumber",
            "StudyInstanceUID",
            "PatientID",
            "AccessionNumber",
            "BodyPartExamined",
        ):
            assert image[keyword].value == source[keyword].value, keyword
        reference = image.SourceImageSequence[0]
        assert (reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID) == (
            source.SOPClassUID,
            source.SOPInstanceUID,
        )
    assert len({image.SeriesInstanceUID for image in images}) == 1


def test_pixel_inside_a_segment_is_its_colour_blended_over_the_windowed_grey(tmp_path: Path) -> None:
    images = _write_and_read(_build(_case()), tmp_path)

    grey = CT_DEFAULT_WINDOW.apply(np.array([BODY_HU]))[0]
    expected = (1 - FILL_OPACITY) * float(grey) + FILL_OPACITY * np.array(SEGMENTS[0].rgb)
    assert images[2].pixel_array[70, 45] == pytest.approx(expected, abs=1)


def test_segment_border_is_drawn_in_its_full_colour(tmp_path: Path) -> None:
    images = _write_and_read(_build(_case()), tmp_path)

    assert tuple(images[2].pixel_array[50, 45]) == SEGMENTS[0].rgb  # first row of the liver
    assert tuple(images[2].pixel_array[70, 69]) == SEGMENTS[0].rgb  # last column


def test_pixel_outside_every_segment_is_the_windowed_grey(tmp_path: Path) -> None:
    images = _write_and_read(_build(_case()), tmp_path)

    grey = CT_DEFAULT_WINDOW.apply(np.array([BODY_HU]))[0]
    assert tuple(images[2].pixel_array[100, 100]) == (grey, grey, grey)
    assert tuple(images[0].pixel_array[70, 45]) == (grey, grey, grey)  # the liver is not on slice 0


def test_legend_names_each_segment_next_to_a_swatch_of_its_colour() -> None:
    layer = annotation_layer((128, 128), [LegendEntry("liver", (221, 130, 101), 12.3)], [])

    # 128 pixels: 8-pixel text, a 4-pixel margin, the swatch in the first 8 x 8 pixels
    assert tuple(layer[6, 6]) == (221, 130, 101, 255)
    text = layer[4:14, 16:80]
    assert (text[..., 3] > 0).sum() > 30
    assert ((text[..., :3] == 255).all(axis=-1) & (text[..., 3] == 255)).any()
    assert not layer[40:100, :, 3].any()  # nothing drawn over the middle of the image


def test_legend_and_notice_are_burned_into_every_image(tmp_path: Path) -> None:
    case = _case()

    images = _write_and_read(_build(case), tmp_path)

    for image in images:
        pixels = image.pixel_array
        # the source is air (black) at the top and bottom rows, where the text goes
        legend, notice = pixels[:30, :], pixels[-30:, :]
        assert (legend == SEGMENTS[1].rgb).all(axis=-1).any()  # the empty spleen's swatch too
        assert (legend == 255).all(axis=-1).sum() > 20
        assert (notice == 255).all(axis=-1).sum() > 40


def test_text_falls_back_to_pillows_own_font_without_dejavu(monkeypatch) -> None:
    truetype = ImageFont.truetype

    def without_dejavu(font, *args, **kwargs):
        if font == secondary_capture.FONT_FILE:
            raise OSError("cannot open resource")
        return truetype(font, *args, **kwargs)

    monkeypatch.setattr(ImageFont, "truetype", without_dejavu)

    layer = annotation_layer((128, 128), [], [NOTICE])

    assert (layer[-30:, :, 3] == 255).sum() > 40


def test_text_is_drawn_in_ascii_with_a_bitmap_font(monkeypatch) -> None:
    monkeypatch.setattr(secondary_capture, "load_font", lambda size: ImageFont.load_default_imagefont())

    layer = annotation_layer((128, 128), [LegendEntry("liver", (221, 130, 101), 1.0)], [NOTICE])

    assert (layer[-30:, :, 3] == 255).sum() > 40


def test_ct_window_is_the_series_own_when_it_has_one() -> None:
    case = _case()
    for ds in case.datasets:
        ds.WindowCenter, ds.WindowWidth = [35, 600], [80, 2000]

    assert window_for_series(case.volume, case.datasets) == Window(center=35.0, width=80.0)


def test_ct_without_a_window_gets_the_soft_tissue_window() -> None:
    case = _case()

    assert window_for_series(case.volume, case.datasets) == Window(center=40.0, width=400.0)


def test_mr_without_a_window_spans_the_1st_to_99th_percentile() -> None:
    case = _case(modality="MR")
    low, high = np.percentile(case.volume.array, [1, 99])

    window = window_for_series(case.volume, case.datasets)

    assert (window.center - window.width / 2, window.center + window.width / 2) == pytest.approx((low, high))


def test_window_maps_values_as_ps3_3_linear_voi() -> None:
    window = Window(center=40.0, width=400.0)

    # below c - 0.5 - (w-1)/2 = -160 is black, above c - 0.5 + (w-1)/2 = 239 is white
    assert list(window.apply(np.array([-1000.0, -160.0, 40.0, 239.5, 3000.0]))) == [0, 0, 128, 255, 255]


def test_window_of_width_one_is_a_threshold() -> None:
    assert list(Window(center=10.0, width=1.0).apply(np.array([9.0, 9.5, 9.6, 11.0]))) == [0, 0, 255, 255]


def test_window_narrower_than_one_is_rejected() -> None:
    with pytest.raises(ResultValidationError, match="Window Width 0.5 is less than 1"):
        Window(center=0.0, width=0.5)


def test_header_says_what_the_image_is_and_who_made_it(tmp_path: Path) -> None:
    image = _write_and_read(_build(_case())[:1], tmp_path)[0]

    assert (image.Modality, image.SeriesNumber, image.SeriesDescription) == (
        "OT",
        9904,
        "AI overlay abdomen-organs",
    )
    assert list(image.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]
    assert (image.Manufacturer, image.DeviceSerialNumber) == (DEVICE.manufacturer, "node-test-04")
    assert image.ImageComments == "AI result - not for primary diagnosis"
    assert image.BurnedInAnnotation == "NO"
    assert image.ConversionType == "WSD"
    assert list(image.PatientOrientation) == ["L", "P"]


def test_coronal_images_are_oriented_left_and_feet() -> None:
    image = _build(_case(orientation=CORONAL))[0]

    assert list(image.PatientOrientation) == ["L", "F"]


def test_instance_numbers_count_up_when_the_sources_repeat() -> None:
    case = _case()
    for ds in case.datasets:
        ds.InstanceNumber = 1

    assert [image.InstanceNumber for image in _build(case)] == [1, 2, 3, 4, 5]


def test_dciodvfy_finds_no_errors_and_no_warnings() -> None:
    for image in _build(_case()):
        report = require_valid(image, "SECONDARY-CAPTURE")
        assert (report.errors, report.warnings) == ((), ())


def test_dciodvfy_only_warns_about_laterality_when_the_body_part_is_unknown() -> None:
    report = require_valid(_build(_case(body_part=None))[0], "SECONDARY-CAPTURE")

    assert len(report.warnings) == 1 and "<Laterality>" in report.warnings[0]


def test_one_uid_per_slice_is_required() -> None:
    uid = generate_uid()

    with pytest.raises(
        ResultValidationError, match="need 5 distinct SOP Instance UIDs, one per slice; 1 distinct"
    ):
        _build(_case(), uids=[uid] * 5)


def test_font_is_dejavu_when_installed() -> None:
    require_or_skip(DEJAVU.is_file(), "the annotation font needs Debian fonts-dejavu-core")

    font = secondary_capture.load_font(16)

    assert isinstance(font, ImageFont.FreeTypeFont) and str(font.path).endswith("DejaVuSans.ttf")
