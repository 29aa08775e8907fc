"""Result objects: measurements, DICOM SEG, TID 1500 SR, and their validation with dciodvfy."""

from node.results.measure import SegmentMeasurements, measure_segments, validated_masks
from node.results.seg import AlgorithmInfo, DeviceInfo, build_segmentation
from node.results.sr import build_measurement_report
from node.results.validate import (
    ValidationReport,
    require_valid,
    validate_dataset,
    validate_file,
)

__all__ = [
    "AlgorithmInfo",
    "DeviceInfo",
    "SegmentMeasurements",
    "ValidationReport",
    "build_measurement_report",
    "build_segmentation",
    "measure_segments",
    "require_valid",
    "validate_dataset",
    "validate_file",
    "validated_masks",
]
