"""The volume a pipeline sees: a validated series as one 3D array with its geometry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Volume:
    """One image series as a 3D array, slices sorted along the slice normal.

    ``array[k, i, j]`` is slice ``k``, row ``i``, column ``j`` of the DICOM pixel matrix, after
    Rescale Slope/Intercept (Hounsfield units for CT). Directions are unit vectors in the
    patient coordinate system of PS3.3 C.7.6.2.1.1 (LPS, millimetres).
    """

    array: np.ndarray
    #: millimetres between slices, between rows, between columns (k, i, j)
    spacing: tuple[float, float, float]
    #: Image Position (Patient) of slice 0, the centre of its first pixel
    origin: tuple[float, float, float]
    #: Image Orientation (Patient)[0:3]: direction of increasing column index j
    row_direction: tuple[float, float, float]
    #: Image Orientation (Patient)[3:6]: direction of increasing row index i
    column_direction: tuple[float, float, float]
    #: unit vector from slice 0 towards slice 1
    slice_direction: tuple[float, float, float]
    modality: str
    series_instance_uid: str
    frame_of_reference_uid: str
    #: SOP Instance UID of the instance each slice came from, in array order
    source_instance_uids: tuple[str, ...]
    #: SOP Instance UIDs of the series' localizers (scouts), which are not slices of the volume
    localizer_instance_uids: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        k, i, j = self.array.shape
        return (k, i, j)

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def affine(self) -> np.ndarray:
        """4×4 matrix mapping homogeneous index (k, i, j, 1) to patient coordinates (LPS, mm)."""
        matrix = np.eye(4)
        matrix[:3, 0] = np.asarray(self.slice_direction) * self.spacing[0]
        matrix[:3, 1] = np.asarray(self.column_direction) * self.spacing[1]
        matrix[:3, 2] = np.asarray(self.row_direction) * self.spacing[2]
        matrix[:3, 3] = self.origin
        return matrix
