"""What the node stored, read from Orthanc with pydicom: where each segment is, what the SRs say.

The browser tests compare OHIF's rendering with these, so they are read from the DICOM objects
themselves, not from the node's code that wrote them.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from scipy import ndimage

from tests.e2e.colour import dicom_cielab_to_srgb
from tests.integration.node_fixture import RunningNode


def series_of_modality(node: RunningNode, study_uid: str, modality: str) -> list[tuple[str, Dataset]]:
    """(Series Instance UID, first instance) of each series of ``modality`` in the study."""
    found: list[tuple[str, Dataset]] = []
    for series in node.study_series(study_uid):
        if series["MainDicomTags"].get("Modality") != modality:
            continue
        instance_id = series["Instances"][0]
        dataset = pydicom.dcmread(io.BytesIO(node.client.instance_file(instance_id)))
        found.append((str(series["MainDicomTags"]["SeriesInstanceUID"]), dataset))
    return found


@dataclass(frozen=True)
class SegmentProbe:
    """A pixel well inside one segment, and the colour the SEG recommends for the segment."""

    number: int
    label: str
    #: sRGB of Recommended Display CIELab Value (0062,000D)
    colour: tuple[int, int, int]
    #: the source image the pixel is on
    sop_instance_uid: str
    #: (row, column) of the pixel on that image
    pixel: tuple[int, int]
    #: centre of the pixel in patient coordinates (mm)
    world: tuple[float, float, float]
    #: distance from the pixel to the nearest pixel outside the segment, in pixels
    depth: float


def segment_probes(seg: Dataset, source_folder: Path) -> list[SegmentProbe]:
    """For each segment, the pixel of its frames that lies deepest inside it.

    The deepest pixel (largest distance to the segment's border on its frame) is where OHIF
    draws the segment's fill, far from the outline it draws along the border.
    """
    sources = {
        str(ds.SOPInstanceUID): ds
        for ds in (
            pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(source_folder.glob("*.dcm"))
        )
    }
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    best: dict[int, tuple[float, str, tuple[int, int]]] = {}
    shared = seg.SharedFunctionalGroupsSequence[0]
    for frame, items in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        # With one segment, the segment of every frame is in the shared functional groups.
        identification = items if "SegmentIdentificationSequence" in items else shared
        number = int(identification.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = str(items.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        if not frame.any():
            continue
        # The border of the image counts as outside: OHIF may not draw past it.
        depth = ndimage.distance_transform_edt(np.pad(frame > 0, 1))[1:-1, 1:-1]
        row, column = (int(i) for i in np.unravel_index(int(np.argmax(depth)), depth.shape))
        if number not in best or depth[row, column] > best[number][0]:
            best[number] = (float(depth[row, column]), source, (row, column))
    probes = []
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        assert number in best, f"segment {number} ({item.SegmentLabel}) has no pixel in the SEG"
        depth, source, (row, column) = best[number]
        probes.append(
            SegmentProbe(
                number=number,
                label=str(item.SegmentLabel),
                colour=dicom_cielab_to_srgb([int(v) for v in item.RecommendedDisplayCIELabValue]),
                sop_instance_uid=source,
                pixel=(row, column),
                world=pixel_centre(sources[source], row, column),
                depth=depth,
            )
        )
    return probes


def pixel_centre(image: Dataset, row: int, column: int) -> tuple[float, float, float]:
    """Patient coordinates of a pixel's centre (PS3.3 C.7.6.2.1.1)."""
    position = np.array([float(v) for v in image.ImagePositionPatient])
    orientation = [float(v) for v in image.ImageOrientationPatient]
    along_row, along_column = np.array(orientation[:3]), np.array(orientation[3:])
    row_spacing, column_spacing = (float(v) for v in image.PixelSpacing)
    point = position + column * column_spacing * along_row + row * row_spacing * along_column
    return float(point[0]), float(point[1]), float(point[2])


@dataclass(frozen=True)
class ReportedValue:
    """One numeric measurement (TID 300) of an SR measurement group."""

    group: str  # the group's Tracking Identifier
    name: str  # Concept Name Code Meaning
    value: float
    unit: str  # Measurement Units Code Value (UCUM)


def placed_values(sr: Dataset) -> list[ReportedValue]:
    """The numeric measurements OHIF 3.13 can place on an image: those of every measurement group
    that shares its Tracking Unique Identifier with a group holding an image region (SCOORD).

    OHIF merges the groups of one tracking UID into one measurement and draws it where the
    SCOORD lies (a volumetric TID 1411 group and the planar TID 1410 group beside it, or a
    planar group alone); an empty list for a report OHIF cannot place at all.
    """
    groups = [list(group.get("ContentSequence", [])) for group in _measurement_groups(sr)]
    placed = {_tracking(items, "Tracking Unique Identifier") for items in groups if _has_scoord(items)}
    values = []
    for items in groups:
        if _tracking(items, "Tracking Unique Identifier") not in placed:
            continue
        for item in items:
            if item.ValueType != "NUM" or "MeasuredValueSequence" not in item:
                continue
            measured = item.MeasuredValueSequence[0]
            values.append(
                ReportedValue(
                    group=_tracking(items, "Tracking Unique Identifier"),
                    name=_meaning(item),
                    value=float(measured.NumericValue),
                    unit=str(measured.MeasurementUnitsCodeSequence[0].CodeValue),
                )
            )
    return values


def _has_scoord(items: list[Dataset]) -> bool:
    return any(item.ValueType == "SCOORD" for item in _walk(items))


def _tracking(items: list[Dataset], meaning: str) -> str:
    for item in items:
        if _meaning(item) == meaning:
            return str(item.UID if item.ValueType == "UIDREF" else item.TextValue)
    return ""


def _measurement_groups(sr: Dataset) -> Iterator[Dataset]:
    for item in _walk(list(sr.get("ContentSequence", []))):
        if item.ValueType == "CONTAINER" and _meaning(item) == "Measurement Group":
            yield item


def _walk(items: list[Dataset]) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _walk(list(item.get("ContentSequence", [])))


def _meaning(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeMeaning) if "ConceptNameCodeSequence" in item else ""
