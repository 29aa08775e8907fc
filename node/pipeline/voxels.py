"""Which voxels each segment holds, kept the way the pipeline gave them.

A whole-body model returns a label map with a hundred segments: one boolean volume per
segment would be a hundred times the label map (7.9 GB for a 300 × 512² CT), and stacking
them for a SEG is what made large results take minutes. :class:`SegmentVoxels` keeps a label
map as a label map (or, for segments that overlap, the pipeline's own masks) and answers what
the measurements, the SEG and the SR ask: voxels per segment and per slice, sums of a
volume's values per segment, one segment's plane, the non-empty (segment, slice) frames.
Everything is computed a slice at a time, so no temporary is larger than one slice per
segment.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from node.errors import PipelineError
from node.pipeline.base import PipelineResult, SegmentSpec

#: slices of a label map read at once when summing: 16 × 512² voxels, a few tens of MB
_BLOCK_SLICES = 16


@dataclass(frozen=True, eq=False)
class SegmentVoxels:
    """The segments of one result on the volume's grid, ``(slices, rows, columns)``.

    Exactly one of ``label_map`` (0 background, ``n`` the ``n``-th segment, counting from 1)
    and ``masks`` (one boolean volume per segment, in segment order) is set. Build it with
    :meth:`from_result`, which checks the result against the declared segments.
    """

    shape: tuple[int, int, int]
    #: number of declared segments
    count: int
    label_map: np.ndarray | None = None
    masks: tuple[np.ndarray, ...] | None = None

    @classmethod
    def from_result(
        cls, shape: tuple[int, int, int], segments: Sequence[SegmentSpec], result: PipelineResult
    ) -> SegmentVoxels:
        """Check ``result`` against the declared ``segments`` and the volume's ``shape``.

        Raises :class:`~node.errors.PipelineError` for: no segments, duplicate labels, both or
        neither of masks and label map, a mask or label map not on the grid, a label value
        outside 0 to the number of segments, a mask for an undeclared label or a declared one
        without a mask, a mask with values other than 0/1.
        """
        labels = [spec.label for spec in segments]
        if not labels:
            raise PipelineError("The pipeline declares no segments; there is nothing to store.")
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise PipelineError(
                f"The pipeline declares segment label(s) {duplicates} more than once; "
                "each segment needs its own label."
            )
        if result.label_map is not None:
            if result.masks:
                raise PipelineError("The pipeline returned both masks and a label map; return one of them.")
            return cls(
                shape, len(labels), label_map=_label_map(np.asarray(result.label_map), shape, len(labels))
            )
        return cls(shape, len(labels), masks=_masks(result.masks, labels, shape))

    # -- counting ---------------------------------------------------------------------------

    @functools.cached_property
    def slice_counts(self) -> np.ndarray:
        """Voxels of each segment in each slice: ``(slices, count)``, int64."""
        slices = self.shape[0]
        counts = np.zeros((slices, self.count), dtype=np.int64)
        if self.label_map is not None:
            for k in range(slices):
                counts[k] = np.bincount(self.label_map[k].ravel(), minlength=self.count + 1)[1:]
        else:
            assert self.masks is not None
            for number, mask in enumerate(self.masks):
                counts[:, number] = np.count_nonzero(mask.reshape(slices, -1), axis=1)
        return counts

    def voxel_counts(self) -> np.ndarray:
        """Voxels of each segment: ``(count,)``, int64."""
        return self.slice_counts.sum(axis=0)

    def sums(self, values: np.ndarray) -> np.ndarray:
        """The sum of ``values`` (an array on the same grid) over each segment, in float64 (a
        large CT segment summed in float32 loses whole Hounsfield units).

        A label map is read in blocks of slices and only where it labels something, so the
        cost follows the segmented voxels and no temporary exceeds a block.
        """
        if values.shape != self.shape:
            raise ValueError(f"values of shape {values.shape} are not on the grid {self.shape}")
        totals = np.zeros(self.count, dtype=np.float64)
        if self.label_map is not None:
            for start in range(0, self.shape[0], _BLOCK_SLICES):
                labels = self.label_map[start : start + _BLOCK_SLICES].ravel()
                inside = np.flatnonzero(labels)
                block = values[start : start + _BLOCK_SLICES].ravel()
                totals += np.bincount(
                    labels[inside], weights=block[inside].astype(np.float64), minlength=self.count + 1
                )[1:]
            return totals
        assert self.masks is not None
        for number, mask in enumerate(self.masks):
            for k in np.flatnonzero(self.slice_counts[:, number]):
                totals[number] += values[k][mask[k]].sum(dtype=np.float64)
        return totals

    # -- planes and frames ------------------------------------------------------------------

    def plane(self, slice_index: int, number: int) -> np.ndarray:
        """Segment ``number``'s (1-based) voxels in one slice, boolean ``(rows, columns)``."""
        if self.label_map is not None:
            return self.label_map[slice_index] == number
        assert self.masks is not None
        return self.masks[number - 1][slice_index]

    def planes(self, slice_index: int, numbers: Sequence[int]) -> np.ndarray:
        """Several segments' voxels in one slice: boolean ``(len(numbers), rows, columns)``."""
        if self.label_map is not None:
            wanted = np.asarray(numbers, dtype=self.label_map.dtype)
            return self.label_map[slice_index][None, :, :] == wanted[:, None, None]
        assert self.masks is not None
        return np.stack([self.masks[number - 1][slice_index] for number in numbers])

    def mask(self, number: int) -> np.ndarray:
        """Segment ``number``'s whole boolean volume: one at a time, for those who need it."""
        if self.label_map is not None:
            return self.label_map == number
        assert self.masks is not None
        return self.masks[number - 1]

    def frames(self) -> list[tuple[int, int]]:
        """The non-empty (segment number, slice index) pairs, segment by segment, each
        segment's slices in volume order."""
        numbers, slices = np.nonzero(self.slice_counts.T)
        return [(int(number) + 1, int(k)) for number, k in zip(numbers, slices, strict=True)]

    def present(self) -> Iterator[tuple[int, list[int]]]:
        """For each slice with any segment: its index and the segment numbers in it."""
        for k, row in enumerate(self.slice_counts):
            numbers = (np.nonzero(row)[0] + 1).tolist()
            if numbers:
                yield k, numbers

    @property
    def overlapping(self) -> bool:
        """Whether segments may share voxels (the pipeline gave masks, not a label map)."""
        return self.masks is not None


def _label_map(label_map: np.ndarray, shape: tuple[int, int, int], count: int) -> np.ndarray:
    if label_map.shape != shape:
        raise PipelineError(
            f"The pipeline returned a label map of shape {label_map.shape}; the volume has shape "
            f"{shape} (slices, rows, columns)."
        )
    if not (np.issubdtype(label_map.dtype, np.integer) or label_map.dtype == np.bool_):
        raise PipelineError(
            f"The pipeline returned a label map of dtype {label_map.dtype}; it must hold integers "
            f"(0 background, 1 to {count} its segments)."
        )
    low, high = int(label_map.min(initial=0)), int(label_map.max(initial=0))
    if low < 0 or high > count:
        raise PipelineError(
            f"The pipeline returned a label map with value {low if low < 0 else high}; it declares "
            f"{count} segment(s), so values must be 0 to {count}."
        )
    compact = np.min_scalar_type(count)
    return np.ascontiguousarray(label_map, dtype=compact if label_map.dtype != compact else None)


def _masks(
    masks: Mapping[str, np.ndarray], labels: Sequence[str], shape: tuple[int, int, int]
) -> tuple[np.ndarray, ...]:
    extra = sorted(set(masks) - set(labels))
    if extra:
        raise PipelineError(
            f"The pipeline returned mask(s) for {extra}, which it does not declare as "
            f"segments (declared: {list(labels)})."
        )
    checked = []
    for label in labels:
        if label not in masks:
            raise PipelineError(
                f"The pipeline returned no mask for its declared segment {label!r} "
                f"(returned: {sorted(masks)})."
            )
        checked.append(_boolean(label, np.asarray(masks[label]), shape))
    return tuple(checked)


def _boolean(label: str, mask: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
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
