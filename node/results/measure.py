"""Check what a pipeline returned and measure each segment on the volume's grid.

Pure numpy: the masks are checked against the pipeline's declared segments here, once, so that
the SEG and SR builders can rely on one boolean mask per segment in declaration order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from node.errors import PipelineError
from node.imaging.volume import Volume
from node.pipeline.base import Measurement, PipelineResult, SegmentSpec


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


def validated_masks(
    volume: Volume, segments: Sequence[SegmentSpec], result: PipelineResult
) -> tuple[np.ndarray, ...]:
    """Return one boolean mask per segment, in the order of ``segments``.

    Raises :class:`~node.errors.PipelineError` when the result does not match the declaration:
    a declared segment without a mask, a mask for an undeclared label, a mask whose shape is not
    the volume's, or a mask with values other than 0/1 (``False``/``True``).
    """
    if not segments:
        raise PipelineError("The pipeline declares no segments; there is nothing to store.")
    labels = [spec.label for spec in segments]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise PipelineError(
            f"The pipeline declares segment label(s) {duplicates} more than once; "
            "each segment needs its own label."
        )
    extra = sorted(set(result.masks) - set(labels))
    if extra:
        raise PipelineError(
            f"The pipeline returned mask(s) for {extra}, which it does not declare as "
            f"segments (declared: {labels})."
        )
    masks = []
    for label in labels:
        if label not in result.masks:
            raise PipelineError(
                f"The pipeline returned no mask for its declared segment {label!r} "
                f"(returned: {sorted(result.masks)})."
            )
        masks.append(_as_boolean(label, np.asarray(result.masks[label]), volume.shape))
    return tuple(masks)


def measure_segments(
    volume: Volume, segments: Sequence[SegmentSpec], result: PipelineResult
) -> list[SegmentMeasurements]:
    """Measure every declared segment of ``result`` on ``volume``.

    Volume is the voxel count times the voxel volume (PS3.3 C.7.6.2.1.1 geometry: spacing
    between slice centres, rows and columns), so it is exact for the grid, not a surface
    estimate. The mean intensity is computed only for segments that ask for it, and is None
    for an empty mask, whose mean is undefined.
    """
    measurements = []
    for number, (spec, mask) in enumerate(
        zip(segments, validated_masks(volume, segments, result), strict=True), start=1
    ):
        count = int(np.count_nonzero(mask))
        mean: float | None = None
        if Measurement.MEAN_INTENSITY in spec.measurements and count:
            # float64 accumulation: a large CT mask summed in float32 loses whole HU.
            mean = float(np.mean(volume.array[mask], dtype=np.float64))
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


def _as_boolean(label: str, mask: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    if mask.shape != shape:
        raise PipelineError(
            f"The mask of segment {label!r} has shape {mask.shape}; the volume has shape "
            f"{shape} (slices, rows, columns), and a mask must be on the volume's grid."
        )
    if mask.dtype == np.bool_:
        return mask
    if not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
        raise PipelineError(f"The mask of segment {label!r} has dtype {mask.dtype}; a mask must be boolean.")
    # A probability map or a label map passed by mistake must not be silently thresholded.
    stray = mask[(mask != 0) & (mask != 1)]
    if stray.size:
        raise PipelineError(
            f"The mask of segment {label!r} holds values other than 0 and 1 (e.g. {stray[0]!r}); "
            "a mask must be boolean."
        )
    return mask == 1
