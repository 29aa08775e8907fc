"""Build the planar TID 1500 Measurement Report that SR viewers draw: one outline per segment.

A Comprehensive 3D SR (PS3.3 A.35.13) in a series of its own. Each non-empty segment becomes a
TID 1410 Planar ROI group: a closed SCOORD POLYLINE around the segment's largest connected
region on the source slice where the segment has the most voxels, the area of that region, and
the segment's whole volume. Unlike the volumetric report (``node.results.sr``),
nothing here references the SEG, so OHIF 3.13, which rejects a whole SR with a TID 1411 group
that references a segment, shows these groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from scipy import ndimage
from skimage.measure import approximate_polygon, find_contours

from node.errors import ResultValidationError
from node.imaging.volume import Volume
from node.pipeline.base import Measurement, SegmentSpec
from node.results.measure import SegmentMeasurements
from node.results.seg import AlgorithmInfo, DeviceInfo, coded_concept, order_source_images
from node.results.sr import MILLILITER, VOLUME, measurement_report_document

#: Series Number (0020,0011) of a new planar SR series: the number docs/conformance.md lists.
DEFAULT_PLANAR_SR_SERIES_NUMBER = 9903

_CodedConcept = hd.sr.CodedConcept

#: Area (CID 7470 Linear, Area and Volume Measurements) in square millimetres (UCUM).
AREA = _CodedConcept("42798000", "SCT", "Area")
SQUARE_MILLIMETER = _CodedConcept("mm2", "UCUM", "square millimeter")

#: 4-connected in the plane: the connectivity under which skimage's marching squares
#: (``fully_connected="low"``) draws one closed outline around each region.
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True, eq=False)
class PlanarOutline:
    """Where a segment is drawn in the planar report."""

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


def largest_outline(mask: np.ndarray, pixel_spacing: tuple[float, float]) -> PlanarOutline | None:
    """The outline of ``mask``'s largest region on the slice where ``mask`` is largest.

    ``mask`` is a boolean (slices, rows, columns) array; ``pixel_spacing`` is the distance
    between rows and between columns in millimetres (Pixel Spacing (0028,0030) order). The
    slice with the most voxels is chosen (the first of equals), on it the largest 4-connected
    region, and around that region the iso-line at 0.5 of the mask (marching squares): it runs
    halfway between each pixel centre of the region and each neighbouring centre outside it, so
    the pixels whose centres it encloses are exactly the region with its holes filled. Collinear
    vertices are dropped; they add nothing to the shape. None for an empty mask.
    """
    counts = mask.reshape(mask.shape[0], -1).sum(axis=1)
    if not counts.any():
        return None
    slice_index = int(np.argmax(counts))
    labels, _ = ndimage.label(mask[slice_index], structure=_FOUR_CONNECTED)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    region = labels == int(np.argmax(sizes))
    # Padding keeps a region that touches the image border closed.
    contours = find_contours(np.pad(region, 1).astype(np.float32), 0.5, fully_connected="low")
    # The region's outer boundary encloses the most area; the others are its holes.
    outer = max(contours, key=lambda contour: abs(_shoelace(contour)))
    outer = approximate_polygon(outer, tolerance=1e-6) - 1.0
    # (row, column) array indices, pixel centres at integers -> (column, row) with centres at .5
    points = outer[:, ::-1] + 0.5
    row_spacing, column_spacing = pixel_spacing
    area = int(np.count_nonzero(region)) * row_spacing * column_spacing
    return PlanarOutline(slice_index=slice_index, points=points, area_mm2=float(area))


def has_outline(masks: Sequence[np.ndarray]) -> bool:
    """Whether any segment has a voxel, so that a planar report has a group to hold."""
    return any(mask.any() for mask in masks)


def build_planar_measurement_report(
    *,
    source_images: Sequence[Dataset],
    volume: Volume,
    segments: Sequence[SegmentSpec],
    masks: Sequence[np.ndarray],
    measurements: Sequence[SegmentMeasurements],
    tracking_uids: Sequence[str],
    algorithm: AlgorithmInfo,
    device: DeviceInfo,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int = DEFAULT_PLANAR_SR_SERIES_NUMBER,
) -> hd.sr.Comprehensive3DSR:
    """Return a Comprehensive 3D SR with one TID 1410 Planar ROI group per non-empty segment.

    ``masks`` are the validated boolean masks in the order of ``segments`` (see
    :func:`~node.results.measure.validated_masks`); ``tracking_uids`` the Tracking UID of each
    segment, the same as in the SEG, so the planar group, the volumetric group and the SEG
    segment name one finding (TID 4108). Each group holds the segment's label as Tracking
    Identifier, finding type and category, an Image Region (DCM 111030) POLYLINE on the source
    image of the chosen slice (see :func:`largest_outline`), its Area in mm², and the Volume in
    mL of the whole segment when the segment asks for volumes. An empty segment has nothing to
    outline and no group; its zero volume is in the volumetric report. The source images the
    outlines lie on form the Image Library (TID 1600) and the evidence.

    Raises :class:`~node.errors.ResultValidationError` when ``segments``, ``masks``,
    ``measurements`` and ``tracking_uids`` do not describe the same segments, or when every
    mask is empty: TID 1500 needs at least one group, so there is no report to write (see
    :func:`has_outline`).
    """
    _check_consistent(segments, masks, measurements, tracking_uids)
    if not has_outline(masks):
        raise ResultValidationError(
            "The planar SR needs at least one segment with voxels to outline; every mask is empty."
        )
    ordered = order_source_images(source_images, volume)
    algorithm_id = algorithm.sr_identification()
    pixel_spacing = (volume.spacing[1], volume.spacing[2])
    groups = []
    referenced: dict[str, Dataset] = {}
    for spec, mask, measured, tracking_uid in zip(segments, masks, measurements, tracking_uids, strict=True):
        outline = largest_outline(mask, pixel_spacing)
        if outline is None:
            continue
        image = ordered[outline.slice_index]
        referenced.setdefault(str(image.SOPInstanceUID), image)
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=spec.label),
                referenced_region=hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                    graphic_data=outline.points,
                    source_image=hd.sr.SourceImageForRegion(
                        referenced_sop_class_uid=image.SOPClassUID,
                        referenced_sop_instance_uid=image.SOPInstanceUID,
                    ),
                ),
                finding_type=coded_concept(spec.type),
                finding_category=coded_concept(spec.category),
                algorithm_id=algorithm_id,
                measurements=_measurements(spec, measured, outline, algorithm_id),
            )
        )
    library = list(referenced.values())
    return measurement_report_document(
        groups,
        volume=volume,
        device=device,
        referenced_images=library,
        evidence=library,
        series_description=f"AI ROI {algorithm.name}",
        series_instance_uid=series_instance_uid,
        sop_instance_uid=sop_instance_uid,
        series_number=series_number,
    )


def _measurements(
    spec: SegmentSpec,
    measured: SegmentMeasurements,
    outline: PlanarOutline,
    algorithm_id: hd.sr.AlgorithmIdentification,
) -> list[hd.sr.Measurement]:
    items = [
        hd.sr.Measurement(
            name=AREA, value=outline.area_mm2, unit=SQUARE_MILLIMETER, algorithm_id=algorithm_id
        )
    ]
    if Measurement.VOLUME in spec.measurements:
        items.append(
            hd.sr.Measurement(
                name=VOLUME, value=measured.volume_ml, unit=MILLILITER, algorithm_id=algorithm_id
            )
        )
    return items


def _shoelace(points: np.ndarray) -> float:
    """Signed area of a polygon given as an (n, 2) array of vertices (closed or not)."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _check_consistent(
    segments: Sequence[SegmentSpec],
    masks: Sequence[np.ndarray],
    measurements: Sequence[SegmentMeasurements],
    tracking_uids: Sequence[str],
) -> None:
    declared = [(number, spec.label) for number, spec in enumerate(segments, start=1)]
    measured = [(m.segment_number, m.label) for m in measurements]
    if declared != measured or not len(segments) == len(masks) == len(tracking_uids):
        raise ResultValidationError(
            f"The planar SR needs one mask, measurement and tracking UID per segment: segments "
            f"(number, label) declared {declared}, measured {measured}; {len(masks)} mask(s), "
            f"{len(tracking_uids)} tracking UID(s)."
        )
