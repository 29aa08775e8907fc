"""Where a segment is drawn in an SR: one outline on the slice where the segment is largest.

Both reports draw it (:mod:`node.results.sr`, :mod:`node.results.planar_sr`): it is the SCOORD
OHIF places a measurement with. Each outline is traced in a crop around its region of one
slice, so a hundred segments cost a hundred small contours, not a hundred full volumes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.measure import find_contours

from node.pipeline.voxels import SegmentVoxels

#: 4-connected in the plane: the connectivity under which skimage's marching squares
#: (``fully_connected="low"``) draws one closed outline around each region.
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)

#: closed polylines of these vertex counts (first point repeated) are what OHIF 3.13's
#: Rectangle ROI adapter recognises, so it would offer to re-edit the outline as a rectangle
_RECTANGLE_LIKE = (4, 5)


@dataclass(frozen=True, eq=False)
class PlanarOutline:
    """Where a segment is drawn."""

    #: index of the slice in the volume (and so of its source image)
    slice_index: int
    #: closed polyline, one (column, row) pair per row, first point equal to the last, in the
    #: image coordinates of PS3.3 C.18.6.1.2: (0, 0) is the top left hand corner of the top left
    #: pixel, whose centre is (0.5, 0.5)
    points: np.ndarray
    #: area of the region's pixels in square millimetres: pixel count × row × column spacing, as
    #: volumes are voxel counts. Holes are not counted, so for a ring (the skull on an axial
    #: slice) it is less than the polyline, which traces the outer border, encloses.
    area_mm2: float


def segment_outlines(
    voxels: SegmentVoxels, pixel_spacing: tuple[float, float]
) -> tuple[PlanarOutline | None, ...]:
    """The outline of every segment (None for an empty one), in segment order."""
    return tuple(largest_outline(voxels, number, pixel_spacing) for number in range(1, voxels.count + 1))


def largest_outline(
    voxels: SegmentVoxels, number: int, pixel_spacing: tuple[float, float]
) -> PlanarOutline | None:
    """The outline of segment ``number``'s largest region on the slice where it is largest.

    ``pixel_spacing`` is the distance between rows and between columns in millimetres (Pixel
    Spacing (0028,0030) order). The slice with the most voxels is chosen (the first of equals),
    on it the largest 4-connected region, and around that region the iso-line at 0.5 of the
    mask (marching squares): it runs halfway between each pixel centre of the region and each
    neighbouring centre outside it, so the pixels whose centres it encloses are exactly the
    region with its holes filled. Collinear vertices are dropped; they add nothing to the
    shape. None for an empty segment.
    """
    counts = voxels.slice_counts[:, number - 1]
    if not counts.any():
        return None
    slice_index = int(np.argmax(counts))
    plane = voxels.plane(slice_index, number)
    # label only the segment's bounding box: a structure is a small part of a 512² slice
    top, bottom = np.flatnonzero(plane.any(axis=1))[[0, -1]]
    left, right = np.flatnonzero(plane.any(axis=0))[[0, -1]]
    labels, _ = ndimage.label(plane[top : bottom + 1, left : right + 1], structure=_FOUR_CONNECTED)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = int(np.argmax(sizes))
    rows, columns = ndimage.find_objects(labels)[largest - 1]
    region = labels[rows, columns] == largest
    rows = slice(rows.start + top, rows.stop + top)
    columns = slice(columns.start + left, columns.stop + left)
    # Padding keeps a region that touches the crop's (or the image's) border closed.
    contours = find_contours(np.pad(region, 1).astype(np.float32), 0.5, fully_connected="low")
    # The region's outer boundary encloses the most area; the others are its holes.
    outer = max(contours, key=lambda contour: abs(_shoelace(contour)))
    outer = _without_collinear(outer) - 1.0 + (rows.start, columns.start)
    # (row, column) array indices, pixel centres at integers -> (column, row) with centres at .5
    points = _not_rectangle_like(outer[:, ::-1] + 0.5)
    row_spacing, column_spacing = pixel_spacing
    area = int(np.count_nonzero(region)) * row_spacing * column_spacing
    return PlanarOutline(slice_index=slice_index, points=points, area_mm2=float(area))


def _without_collinear(closed: np.ndarray) -> np.ndarray:
    """The closed polyline ``closed`` (first point repeated last) without the vertices that lie
    on a straight line between their neighbours: the same shape, a tenth of the points.

    skimage's approximate_polygon with a zero tolerance does this one point at a time in
    Python (a third of a second for a hundred outlines); marching squares on a 0/1 image puts
    every vertex on a half-pixel grid, so collinearity is exact and one vectorised test does.
    """
    ring = closed[:-1]
    before = ring - np.roll(ring, 1, axis=0)
    after = np.roll(ring, -1, axis=0) - ring
    turns = np.abs(before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]) > 1e-9
    kept = ring[turns] if turns.any() else ring
    return np.vstack([kept, kept[:1]])


def _not_rectangle_like(points: np.ndarray) -> np.ndarray:
    """A closed polyline of 4 or 5 points with the middle of its longest edge added: the same
    shape, which OHIF no longer mistakes for one of its own rectangles."""
    if len(points) not in _RECTANGLE_LIKE:
        return points
    edges = np.linalg.norm(np.diff(points, axis=0), axis=1)
    longest = int(np.argmax(edges))
    middle = (points[longest] + points[longest + 1]) / 2
    return np.insert(points, longest + 1, middle, axis=0)


def _shoelace(points: np.ndarray) -> float:
    """Signed area of a polygon given as an (n, 2) array of vertices (closed or not)."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
