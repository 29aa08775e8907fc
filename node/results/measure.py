"""Measure each segment of a pipeline's result on the volume's grid.

Pure numpy, a slice at a time (:class:`~node.pipeline.voxels.SegmentVoxels`): counts and sums
per segment, never a boolean volume per segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from node.imaging.volume import Volume
from node.pipeline.base import Measurement, SegmentSpec
from node.pipeline.voxels import SegmentVoxels


@dataclass(frozen=True)
class SegmentMeasurements:
    """What the node measured for one segment; written into the TID 1500 SR."""

    #: 1-based, the position of the segment in the pipeline's ``segments``; the SEG's Segment
    #: Number (0062,0004)
    segment_number: int
    label: str
    #: voxel count × voxel volume, in millilitres
    volume_ml: float
    #: mean of ``Volume.array`` inside the mask (Hounsfield units for CT); None when the
    #: segment does not ask for :attr:`Measurement.MEAN_INTENSITY` or its mask is empty
    mean_intensity: float | None
    voxel_count: int

    def to_json(self) -> dict[str, object]:
        """As job results and ``ai-node pipelines run`` show it: rounded for people to read."""
        return {
            "number": self.segment_number,
            "label": self.label,
            "volume_ml": round(self.volume_ml, 3),
            "mean": None if self.mean_intensity is None else round(self.mean_intensity, 2),
            "voxels": self.voxel_count,
        }


def measure_segments(
    volume: Volume, segments: Sequence[SegmentSpec], voxels: SegmentVoxels
) -> list[SegmentMeasurements]:
    """Measure every declared segment on ``volume``.

    Volume is the voxel count times the voxel volume (PS3.3 C.7.6.2.1.1 geometry: spacing
    between slice centres, rows and columns), so it is exact for the grid, not a surface
    estimate. The mean intensity is computed only for segments that ask for it, and is None
    for an empty mask, whose mean is undefined.
    """
    counts = voxels.voxel_counts()
    wants_mean = [Measurement.MEAN_INTENSITY in spec.measurements for spec in segments]
    sums = voxels.sums(volume.array) if any(wants_mean) else None
    measurements = []
    for number, spec in enumerate(segments, start=1):
        count = int(counts[number - 1])
        mean: float | None = None
        if sums is not None and wants_mean[number - 1] and count:
            mean = float(sums[number - 1] / count)
        measurements.append(
            SegmentMeasurements(
                segment_number=number,
                label=spec.label,
                volume_ml=count * volume.voxel_volume_ml,
                mean_intensity=mean,
                voxel_count=count,
            )
        )
    return measurements
