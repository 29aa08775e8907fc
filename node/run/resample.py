"""From the series' grid to the grid a pipeline wants, and its result back onto the series.

Pure numpy/scipy. A :class:`~node.pipeline.base.InputSpec` asks for an orientation (which way
each array axis runs), a spacing and an intensity transform. :func:`to_model_space` turns the
source :class:`~node.imaging.volume.Volume` into the volume the pipeline sees, and the
returned :class:`ModelSpace` maps a label volume or mask on that grid back onto the source
voxels with :meth:`ModelSpace.to_source`.

Geometry (all affines map a voxel index to DICOM patient coordinates, LPS millimetres):

- **Orientation** permutes and flips array axes only: exact, no interpolation, and exactly
  undone. Each target axis takes the source axis whose direction is closest to it (the
  largest remaining direction cosine first, as nibabel's ``io_orientation`` does), so an
  oblique series gets the closest orientation and keeps its true directions in the affine.
- **Spacing**: the target grid has the requested spacing and ``round(n × s / t)`` voxels
  along each axis (at least one), centred on the source field of view, so neither end is
  favoured; where an integer ratio of spacings would put source voxel centres exactly on
  model voxel boundaries, the grid moves by half a model voxel so that they sit on model
  voxel centres instead. The image is interpolated linearly (values outside the field of
  view repeat the edge); a result comes back by nearest neighbour: each source voxel takes the
  value of the model voxel whose centre is nearest to its own centre along every axis. Both
  ways go through the same index mapping, so a mask stays aligned with the source voxels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from node.imaging.volume import Volume
from node.pipeline.base import AXIS_LETTERS, InputSpec, IntensityWindow, IntensityZScore


@dataclass(frozen=True, eq=False)
class ModelSpace:
    """How the volume a pipeline saw relates to the source volume; maps results back."""

    #: the source volume's shape (k, i, j)
    source_shape: tuple[int, int, int]
    #: source axis that each model axis comes from
    permutation: tuple[int, int, int]
    #: whether each model axis runs opposite to its source axis
    flips: tuple[bool, bool, bool]
    #: shape after permuting and flipping, before changing the spacing
    oriented_shape: tuple[int, int, int]
    #: the model grid's shape
    shape: tuple[int, int, int]
    #: per model axis: model index = (oriented index × scale) + offset (``None``: unchanged)
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]

    @property
    def resampled(self) -> bool:
        return self.shape != self.oriented_shape or any(
            s != 1.0 or o != 0.0 for s, o in zip(self.scale, self.offset, strict=True)
        )

    def to_source(self, values: np.ndarray) -> np.ndarray:
        """A label volume or mask on the model grid, on the source grid (nearest neighbour)."""
        if values.shape != self.shape:
            raise ValueError(f"array of shape {values.shape} is not on the model grid {self.shape}")
        if self.resampled:
            indices = [
                np.clip(np.rint(np.arange(n) * scale + offset), 0, m - 1).astype(np.intp)
                for n, m, scale, offset in zip(
                    self.oriented_shape, self.shape, self.scale, self.offset, strict=True
                )
            ]
            values = values[np.ix_(*indices)]
        return _unorient(values, self.permutation, self.flips)


def to_model_space(volume: Volume, spec: InputSpec) -> tuple[Volume, ModelSpace]:
    """The volume a pipeline with input ``spec`` receives, and the way back.

    The returned volume's affine is exact for its grid; its ``source_instance_uids`` is empty
    when its axes are no longer the series' slices.
    """
    permutation, flips = _orientation(volume, spec.orientation)
    oriented = _orient(volume, permutation, flips)
    oriented_shape = oriented.shape
    model = oriented
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    if spec.spacing is not None and tuple(spec.spacing) != oriented.spacing:
        model, scale, offset = _respace(oriented, spec.spacing)
    if spec.intensity is not None:
        model = replace(model, array=apply_intensity(model.array, spec.intensity))
    space = ModelSpace(
        source_shape=volume.shape,
        permutation=permutation,
        flips=flips,
        oriented_shape=oriented_shape,
        shape=model.shape,
        scale=scale,
        offset=offset,
    )
    return model, space


def apply_intensity(array: np.ndarray, intensity: IntensityWindow | IntensityZScore) -> np.ndarray:
    """``array`` (float32) after an intensity transform of :class:`~node.pipeline.base.InputSpec`."""
    if isinstance(intensity, IntensityWindow):
        clipped = np.clip(array, intensity.lower, intensity.upper)
        factor = (intensity.out_max - intensity.out_min) / (intensity.upper - intensity.lower)
        return ((clipped - intensity.lower) * factor + intensity.out_min).astype(np.float32)
    selected = array[array != 0] if intensity.nonzero else array
    if selected.size == 0:
        return np.zeros_like(array, dtype=np.float32)
    mean = float(np.mean(selected, dtype=np.float64))
    std = float(np.std(selected, dtype=np.float64)) or 1.0
    normalised = ((array - mean) / std).astype(np.float32)
    if intensity.nonzero:
        normalised[array == 0] = 0
    return normalised


# --------------------------------------------------------------------------------------------
# Orientation
# --------------------------------------------------------------------------------------------


def _orientation(volume: Volume, code: str | None) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Source axis and flip for each target axis of orientation ``code``."""
    if code is None:
        return (0, 1, 2), (False, False, False)
    directions = np.array([volume.slice_direction, volume.column_direction, volume.row_direction])
    targets = np.array([AXIS_LETTERS[letter] for letter in code])
    # cosines[t, a]: how far source axis a runs along target axis t
    cosines = targets @ directions.T
    permutation = [-1, -1, -1]
    free_targets, free_sources = {0, 1, 2}, {0, 1, 2}
    for _ in range(3):
        t, a = max(
            ((t, a) for t in free_targets for a in free_sources),
            key=lambda pair: (abs(cosines[pair]), -pair[0], -pair[1]),
        )
        permutation[t] = a
        free_targets.discard(t)
        free_sources.discard(a)
    flips = tuple(bool(cosines[t, permutation[t]] < 0) for t in range(3))
    return (permutation[0], permutation[1], permutation[2]), (flips[0], flips[1], flips[2])


def _orient(volume: Volume, permutation: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> Volume:
    if permutation == (0, 1, 2) and not any(flips):
        return volume
    array = np.transpose(volume.array, permutation)
    flipped_axes = tuple(t for t in range(3) if flips[t])
    if flipped_axes:
        array = np.flip(array, axis=flipped_axes)
    source_directions = [
        np.asarray(volume.slice_direction),
        np.asarray(volume.column_direction),
        np.asarray(volume.row_direction),
    ]
    origin = np.asarray(volume.origin, dtype=float)
    directions = []
    for t, a in enumerate(permutation):
        if flips[t]:
            # index 0 of a flipped axis is the source's last voxel along it
            origin = origin + (volume.shape[a] - 1) * volume.spacing[a] * source_directions[a]
            directions.append(-source_directions[a])
        else:
            directions.append(source_directions[a])
    return replace(
        volume,
        array=np.ascontiguousarray(array),
        spacing=(
            volume.spacing[permutation[0]],
            volume.spacing[permutation[1]],
            volume.spacing[permutation[2]],
        ),
        origin=_triple(origin),
        slice_direction=_triple(directions[0]),
        column_direction=_triple(directions[1]),
        row_direction=_triple(directions[2]),
        source_instance_uids=volume.source_instance_uids if permutation[0] == 0 and not flips[0] else (),
    )


def _unorient(
    values: np.ndarray, permutation: tuple[int, int, int], flips: tuple[bool, bool, bool]
) -> np.ndarray:
    flipped_axes = tuple(t for t in range(3) if flips[t])
    if flipped_axes:
        values = np.flip(values, axis=flipped_axes)
    if permutation != (0, 1, 2):
        values = np.transpose(values, np.argsort(permutation))
    return np.ascontiguousarray(values)


# --------------------------------------------------------------------------------------------
# Spacing
# --------------------------------------------------------------------------------------------


def _respace(
    volume: Volume, spacing: tuple[float, float, float]
) -> tuple[Volume, tuple[float, float, float], tuple[float, float, float]]:
    """Resample ``volume`` linearly onto ``spacing``; return it with the oriented→model index map."""
    shape = tuple(
        max(1, round(n * s / t)) for n, s, t in zip(volume.shape, volume.spacing, spacing, strict=True)
    )
    # Centres of both grids' fields of view coincide: source index i sits at i × s, model index
    # m at centre + (m - (M - 1) / 2) × t, so m = i × s / t + ((M - 1) - (N - 1) × s / t) / 2.
    scale = tuple(s / t for s, t in zip(volume.spacing, spacing, strict=True))
    offset = tuple(
        _untied(((m - 1) - (n - 1) * f) / 2, f, n) for n, m, f in zip(volume.shape, shape, scale, strict=True)
    )
    # affine_transform maps each output (model) index o to the input (source) index
    # i = (o - offset) / scale.
    array = ndimage.affine_transform(
        volume.array,
        np.array([1 / f for f in scale]),
        offset=np.array([-o / f for o, f in zip(offset, scale, strict=True)]),
        output_shape=shape,
        order=1,
        mode="nearest",
        output=np.float32,
    )
    directions = [
        np.asarray(volume.slice_direction),
        np.asarray(volume.column_direction),
        np.asarray(volume.row_direction),
    ]
    # position of model index 0 = position of source index -offset / scale
    origin = np.asarray(volume.origin, dtype=float)
    for axis in range(3):
        origin = origin + (-offset[axis] / scale[axis]) * volume.spacing[axis] * directions[axis]
    resampled = replace(
        volume,
        array=array,
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        origin=_triple(origin),
        source_instance_uids=(),
    )
    return (
        resampled,
        (scale[0], scale[1], scale[2]),
        (offset[0], offset[1], offset[2]),
    )


def _untied(offset: float, scale: float, count: int) -> float:
    """``offset``, or ``offset + 1/2`` when that avoids source voxel centres falling exactly on
    model voxel boundaries.

    With an integer ratio of spacings (3 mm slices, a 1.5 mm model) a centred model grid can
    put every source centre half-way between two model centres; nearest neighbour then breaks
    every tie the same way and the mask moves by half a model voxel. Half a model voxel more
    puts those source centres on model centres instead.
    """
    positions = np.arange(count) * scale + offset
    if not np.any(np.isclose(positions - np.floor(positions), 0.5, atol=1e-6)):
        return offset
    shifted = positions + 0.5
    if np.any(np.isclose(shifted - np.floor(shifted), 0.5, atol=1e-6)):
        return offset
    return offset + 0.5


def _triple(vector: np.ndarray) -> tuple[float, float, float]:
    return (float(vector[0]), float(vector[1]), float(vector[2]))
