"""Synthetic DICOM image series for unit tests: small, fast, with exact known geometry."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def make_series(
    pixels: np.ndarray,
    *,
    modality: str = "CT",
    spacing: tuple[float, float, float] = (2.0, 0.8, 0.8),
    origin: tuple[float, float, float] = (-100.0, -100.0, 50.0),
    orientation: Sequence[float] = AXIAL,
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
) -> list[Dataset]:
    """Return one dataset per slice of ``pixels`` (k, rows, cols), stored values as given.

    Slice k lies at ``origin + k * spacing[0] * normal``; the datasets come back in slice order.
    """
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_of_reference_uid = frame_of_reference_uid or generate_uid()
    row = np.asarray(orientation[:3], dtype=float)
    col = np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row, col)
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    datasets = []
    for k, plane in enumerate(pixels):
        position = np.asarray(origin) + k * spacing[0] * normal
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PatientName = "Test^Synthetic"
        ds.PatientID = "SYN0001"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyDate = "20260101"
        ds.StudyTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = "SYN1"
        ds.ReferringPhysicianName = ""
        ds.Modality = modality
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.Manufacturer = "Synthetic"
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = plane.shape
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = rescale_slope
        ds.RescaleIntercept = rescale_intercept
        if modality == "CT":
            ds.RescaleType = "HU"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.KVP = 120
        else:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
            ds.ScanningSequence = "GR"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "3D"
            ds.EchoTime = 3.0
            ds.RepetitionTime = 8.0
            ds.EchoTrainLength = 1
            del ds.RescaleSlope, ds.RescaleIntercept
        ds.PixelData = np.ascontiguousarray(plane.astype(np.int16)).tobytes()
        datasets.append(ds)
    return datasets


def write_series(datasets: Sequence[Dataset], folder) -> list:
    """Write datasets as Part 10 files into ``folder``; return the paths."""
    paths = []
    for n, ds in enumerate(datasets):
        path = folder / f"{n:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def segment_mask(result, segments, label: str) -> np.ndarray:
    """One segment's boolean mask out of a pipeline result, label map or masks alike."""
    from node.pipeline.voxels import SegmentVoxels

    shape = (result.label_map if result.label_map is not None else next(iter(result.masks.values()))).shape
    number = next(n for n, spec in enumerate(segments, start=1) if spec.label == label)
    return SegmentVoxels.from_result(shape, segments, result).mask(number)
