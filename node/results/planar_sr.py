"""Build the planar TID 1500 Measurement Report: one outline per segment, nothing else.

A Comprehensive 3D SR (PS3.3 A.35.13) in a series of its own. Each non-empty segment becomes a
TID 1410 Planar ROI group: a closed SCOORD POLYLINE around the segment's largest connected
region on the source slice where the segment has the most voxels
(:mod:`node.results.outline`), the area of that region, and the segment's whole volume. It
references no SEG, for archives and viewers that draw planar ROIs and read nothing else; the
volumetric report (:mod:`node.results.sr`) holds the same outlines beside its SEG references.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset

from node.errors import ResultValidationError
from node.imaging.volume import Volume
from node.pipeline.base import Measurement, SegmentSpec
from node.results.measure import SegmentMeasurements
from node.results.outline import PlanarOutline
from node.results.report import AREA, MILLILITER, SQUARE_MILLIMETER, VOLUME, measurement_report_document
from node.results.seg import AlgorithmInfo, DeviceInfo, coded_concept, order_source_images

#: Series Number (0020,0011) of a new planar SR series: the number docs/conformance.md lists.
DEFAULT_PLANAR_SR_SERIES_NUMBER = 9903


def has_outline(outlines: Sequence[PlanarOutline | None]) -> bool:
    """Whether any segment has a voxel, so that a planar report has a group to hold."""
    return any(outline is not None for outline in outlines)


def planar_group(
    *,
    spec: SegmentSpec,
    outline: PlanarOutline,
    image: Dataset,
    tracking_uid: str,
    algorithm_id: hd.sr.AlgorithmIdentification,
    measurements: Sequence[hd.sr.Measurement],
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """A TID 1410 group: the segment's outline as an Image Region (DCM 111030) POLYLINE on
    ``image``, its tracking identifier and UID (the SEG segment's, TID 4108), finding type and
    category, and ``measurements``."""
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
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
        measurements=list(measurements),
    )


def area_measurement(
    outline: PlanarOutline, algorithm_id: hd.sr.AlgorithmIdentification
) -> hd.sr.Measurement:
    """The Area (mm²) of the outlined region."""
    return hd.sr.Measurement(
        name=AREA, value=outline.area_mm2, unit=SQUARE_MILLIMETER, algorithm_id=algorithm_id
    )


def build_planar_measurement_report(
    *,
    source_images: Sequence[Dataset],
    volume: Volume,
    segments: Sequence[SegmentSpec],
    outlines: Sequence[PlanarOutline | None],
    measurements: Sequence[SegmentMeasurements],
    tracking_uids: Sequence[str],
    library: Dataset | None,
    algorithm: AlgorithmInfo,
    device: DeviceInfo,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int = DEFAULT_PLANAR_SR_SERIES_NUMBER,
) -> Dataset:
    """Return a Comprehensive 3D SR with one TID 1410 Planar ROI group per non-empty segment.

    ``outlines`` are the segments' outlines (:func:`~node.results.outline.segment_outlines`,
    None for an empty segment); ``tracking_uids`` the Tracking UID of each segment, the same as
    in the SEG, so the planar group, the volumetric group and the SEG segment name one finding
    (TID 4108). Each group holds the outline, its Area in mm², and the Volume in mL of the whole
    segment when the segment asks for volumes. An empty segment has nothing to outline and no
    group. ``library`` is the Image Library of the outlines' images
    (:func:`~node.results.report.image_library`); the source images are the evidence.

    Raises :class:`~node.errors.ResultValidationError` when ``segments``, ``outlines``,
    ``measurements`` and ``tracking_uids`` do not describe the same segments, or when every
    segment is empty: TID 1500 needs at least one group, so there is no report to write (see
    :func:`has_outline`).
    """
    _check_consistent(segments, outlines, measurements, tracking_uids)
    if not has_outline(outlines):
        raise ResultValidationError(
            "The planar SR needs at least one segment with voxels to outline; every mask is empty."
        )
    ordered = order_source_images(source_images, volume)
    algorithm_id = algorithm.sr_identification()
    groups = []
    for spec, outline, measured, tracking_uid in zip(
        segments, outlines, measurements, tracking_uids, strict=True
    ):
        if outline is None:
            continue
        items = [area_measurement(outline, algorithm_id)]
        if Measurement.VOLUME in spec.measurements:
            items.append(
                hd.sr.Measurement(
                    name=VOLUME, value=measured.volume_ml, unit=MILLILITER, algorithm_id=algorithm_id
                )
            )
        groups.append(
            planar_group(
                spec=spec,
                outline=outline,
                image=ordered[outline.slice_index],
                tracking_uid=tracking_uid,
                algorithm_id=algorithm_id,
                measurements=items,
            )
        )
    return measurement_report_document(
        groups,
        volume=volume,
        device=device,
        library=library,
        evidence=ordered,
        series_description=f"AI ROI {algorithm.name}",
        series_instance_uid=series_instance_uid,
        sop_instance_uid=sop_instance_uid,
        series_number=series_number,
    )


def _check_consistent(
    segments: Sequence[SegmentSpec],
    outlines: Sequence[PlanarOutline | None],
    measurements: Sequence[SegmentMeasurements],
    tracking_uids: Sequence[str],
) -> None:
    declared = [(number, spec.label) for number, spec in enumerate(segments, start=1)]
    measured = [(m.segment_number, m.label) for m in measurements]
    if declared != measured or not len(segments) == len(outlines) == len(tracking_uids):
        raise ResultValidationError(
            f"The planar SR needs one outline, measurement and tracking UID per segment: segments "
            f"(number, label) declared {declared}, measured {measured}; {len(outlines)} outline(s), "
            f"{len(tracking_uids)} tracking UID(s)."
        )
