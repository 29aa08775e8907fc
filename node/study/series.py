"""A series as the node knows it before reading any pixel: its summary and its slice plane.

Orthanc's tags (``node.orthanc.study``) or a folder's headers (``ai-node pipelines run``) fill a
:class:`SeriesSummary`; routing and the worker choose among summaries
(:mod:`node.study.criteria`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.uid import CTImageStorage, MRImageStorage, PositronEmissionTomographyImageStorage

from node.errors import InputSeriesError

#: A normal further than this from every patient axis is "oblique". Head scans are routinely
#: angled along the AC-PC or orbitomeatal line by 10° to 25° and are still read as axial.
OBLIQUE_LIMIT_DEGREES = 30.0

#: Storage SOP classes that hold one cross-sectional slice per instance (PS3.4 B.5), the only
#: kind :func:`node.imaging.series.build_volume` stacks. Enhanced (multi-frame) objects need a
#: different reader.
SINGLE_FRAME_SLICE_SOP_CLASSES = frozenset(
    {CTImageStorage, MRImageStorage, PositronEmissionTomographyImageStorage}
)


class SlicePlane(enum.StrEnum):
    """The anatomical plane of a slice, from the dominant component of its normal."""

    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"
    OBLIQUE = "oblique"


@dataclass(frozen=True)
class SeriesSummary:
    """What the worker knows about a series before downloading pixels (from Orthanc's tags)."""

    series_instance_uid: str
    modality: str
    instance_count: int
    #: Image Orientation (Patient) of one instance; None when the series has none
    image_orientation: tuple[float, ...] | None
    sop_class_uid: str | None
    series_description: str = ""
    series_number: int | None = None
    #: Body Part Examined (0018,0015), upper case; None when absent
    body_part: str | None = None
    #: Slice Thickness (0018,0050) in mm; None when absent
    slice_thickness_mm: float | None = None

    def label(self) -> str:
        """How messages name the series, e.g. ``series 1.2.3 (MR, 1 instance, number 4)``."""
        parts = [self.modality or "no modality", count_text(self.instance_count, "instance")]
        if self.series_number is not None:
            parts.append(f"number {self.series_number}")
        if self.series_description:
            parts.append(f'"{self.series_description}"')
        return f"series {self.series_instance_uid} ({', '.join(parts)})"


def classify_orientation(iop: Sequence[float]) -> SlicePlane:
    """Name the plane of Image Orientation (Patient) ``iop`` by its normal's largest component.

    The normal (row × column) along L/R is sagittal, along A/P coronal, along H/F axial; a
    normal more than :data:`OBLIQUE_LIMIT_DEGREES` from all three axes is oblique.
    """
    if len(iop) != 6:
        raise InputSeriesError(
            f"Image Orientation (Patient) must have 6 values, got {len(iop)}: {list(iop)}."
        )
    cosines = np.asarray(iop, dtype=float)
    normal = np.cross(cosines[:3], cosines[3:])
    length = float(np.linalg.norm(normal))
    if not math.isfinite(length) or length < 0.5:
        raise InputSeriesError(
            f"Image Orientation (Patient) {cosines_text(cosines)} is not two orthogonal unit "
            "vectors, so it has no slice normal."
        )
    components = np.abs(normal) / length
    dominant = int(components.argmax())
    if components[dominant] < math.cos(math.radians(OBLIQUE_LIMIT_DEGREES)):
        return SlicePlane.OBLIQUE
    return (SlicePlane.SAGITTAL, SlicePlane.CORONAL, SlicePlane.AXIAL)[dominant]


def count_text(n: int, noun: str) -> str:
    """``1 instance``, ``3 instances``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def cosines_text(cosines: Iterable[float]) -> str:
    """Direction cosines as DICOM writes them, backslash-separated, 4 significant digits."""
    return "\\".join(f"{c:.4g}" for c in cosines)
