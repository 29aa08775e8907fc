"""Build the TID 1500 Measurement Report that carries a pipeline's segment measurements.

A Comprehensive 3D SR (PS3.3 A.35.13) in its own series. Each segment with voxels gets two
measurement groups that share its tracking identifier and UID (TID 4108), the SEG segment's:

- a TID 1411 Volumetric ROI group that references the segment in the SEG (DCM 121191) with
  its source series, and holds the volume and mean intensity the node measured and what the
  pipeline measured and concluded itself;
- a TID 1410 Planar ROI group with the segment's outline on the slice where it is largest
  (:mod:`node.results.outline`) and the outlined area.

OHIF 3.13 needs the second: it places every measurement of an SR by a SCOORD, merges groups
by tracking UID, and fails the whole SR ("Cannot read properties of undefined (reading
'ReferencedSOPSequence')") when one has none; the pair opens there as the outline labelled
with the volume (docs/viewer.md). So a segment without voxels, which has no outline, gets no
group (its zero volume is in the job's result); only if the pipeline reported quantities or
findings for it is its volumetric group kept, and that report will not open in OHIF 3.13.
Findings about the whole study go into the report's Qualitative Evaluations container
(TID 1500 row 12), which OHIF does not try to place.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from node.errors import PipelineError, ResultValidationError
from node.imaging.volume import Volume
from node.pipeline.base import Finding, Measurement, PipelineResult, SegmentSpec
from node.results.measure import SegmentMeasurements
from node.results.outline import PlanarOutline
from node.results.planar_sr import area_measurement, planar_group
from node.results.report import (
    MEAN,
    MEAN_INTENSITY_BY_MODALITY,
    MILLILITER,
    VOLUME,
    measurement_report_document,
)
from node.results.seg import AlgorithmInfo, DeviceInfo, coded_concept, order_source_images

log = logging.getLogger(__name__)

#: Series Number (0020,0011) of a new SR series: the number docs/conformance.md lists.
DEFAULT_SR_SERIES_NUMBER = 9902

#: TID 1500 row 12: the report's own qualitative evaluations, outside any measurement group
QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")


def build_measurement_report(
    *,
    source_images: Sequence[Dataset],
    volume: Volume,
    segmentation: Dataset,
    segments: Sequence[SegmentSpec],
    measurements: Sequence[SegmentMeasurements],
    outlines: Sequence[PlanarOutline | None],
    library: Dataset | None,
    algorithm: AlgorithmInfo,
    device: DeviceInfo,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int = DEFAULT_SR_SERIES_NUMBER,
    pipeline_result: PipelineResult | None = None,
) -> Dataset:
    """Return a Comprehensive 3D SR with a TID 1500 Measurement Report of ``measurements``.

    Per segment with voxels, a TID 1411 group (Referenced Segment in ``segmentation``, finding
    type and category, the measurements the segment asks for, the pipeline's own quantities
    (TID 300) and findings (Qualitative Evaluations), each with the algorithm's name and version,
    TID 4019) and a TID 1410 group with its outline from ``outlines`` and the area. ``library``
    is the Image Library of the outlines' images (:func:`~node.results.report.image_library`);
    the source images and the SEG are the evidence (PS3.3 C.17.2.3).

    Raises :class:`~node.errors.ResultValidationError` when ``measurements``, ``segments``,
    ``outlines`` and the SEG's Segment Sequence do not describe the same segments.
    """
    _check_consistent(segmentation, segments, measurements, outlines)
    ordered = order_source_images(source_images, volume)
    algorithm_id = algorithm.sr_identification()
    findings = pipeline_result.findings if pipeline_result else ()
    groups: list[
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
        | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    ] = []
    for spec, measured, outline in zip(segments, measurements, outlines, strict=True):
        item = segmentation.SegmentSequence[measured.segment_number - 1]
        tracking_uid = str(
            item.get("TrackingUID")
            or generate_uid(entropy_srcs=[sop_instance_uid, "segment", str(measured.segment_number)])
        )
        extras = _pipeline_quantities(spec, pipeline_result, algorithm_id)
        evaluations = [_qualitative(f) for f in findings if f.segment == spec.label]
        if outline is None and not (extras or evaluations):
            continue
        if outline is None:
            log.info(
                "segment %r of %s has no voxels but pipeline measurements: its SR group has no "
                "outline, so OHIF 3.13 will not open this SR",
                spec.label,
                algorithm.name,
            )
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=tracking_uid, identifier=str(item.get("TrackingID") or spec.label)
                ),
                # Source series rather than a list of source images: that is what dcmqi and
                # viewers resolve a segment's images by.
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=segmentation.SOPClassUID,
                    sop_instance_uid=segmentation.SOPInstanceUID,
                    segment_number=measured.segment_number,
                    source_series=hd.sr.SourceSeriesForSegmentation(volume.series_instance_uid),
                ),
                finding_type=coded_concept(spec.type),
                finding_category=coded_concept(spec.category),
                algorithm_id=algorithm_id,
                measurements=[*_measurements(spec, measured, volume.modality, algorithm_id), *extras],
                qualitative_evaluations=evaluations or None,
            )
        )
        if outline is not None:
            groups.append(
                planar_group(
                    spec=spec,
                    outline=outline,
                    image=ordered[outline.slice_index],
                    tracking_uid=tracking_uid,
                    algorithm_id=algorithm_id,
                    measurements=[area_measurement(outline, algorithm_id)],
                )
            )
    if not groups:
        raise ResultValidationError(
            "The SR needs at least one segment with voxels or pipeline measurements; every segment is empty."
        )
    document = measurement_report_document(
        groups,
        volume=volume,
        device=device,
        library=library,
        evidence=[*ordered, segmentation],
        series_description=f"AI SR {algorithm.name}",
        series_instance_uid=series_instance_uid,
        sop_instance_uid=sop_instance_uid,
        series_number=series_number,
    )
    study_findings = [f for f in findings if f.segment is None]
    if study_findings:
        document.ContentSequence.append(_study_evaluations(study_findings))
    return document


def has_groups(outlines: Sequence[PlanarOutline | None], pipeline_result: PipelineResult | None) -> bool:
    """Whether :func:`build_measurement_report` has a group to write."""
    about_segments = bool(
        pipeline_result
        and (pipeline_result.measurements or any(f.segment is not None for f in pipeline_result.findings))
    )
    return about_segments or any(outline is not None for outline in outlines)


def _study_evaluations(findings: Sequence[Finding]) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.CodeContentItem(
                name=coded_concept(finding.name),
                value=coded_concept(finding.value),
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
            for finding in findings
        ]
    )
    return container


def _pipeline_quantities(
    spec: SegmentSpec, pipeline_result: PipelineResult | None, algorithm_id: hd.sr.AlgorithmIdentification
) -> list[hd.sr.Measurement]:
    """TID 300 items for the numbers the pipeline reported for this segment."""
    if pipeline_result is None:
        return []
    return [
        hd.sr.Measurement(
            name=coded_concept(quantity.name),
            value=quantity.value,
            unit=coded_concept(quantity.unit),
            algorithm_id=algorithm_id,
        )
        for quantity in pipeline_result.measurements.get(spec.label, ())
    ]


def _qualitative(finding: Finding) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(name=coded_concept(finding.name), value=coded_concept(finding.value))


def _measurements(
    spec: SegmentSpec,
    measured: SegmentMeasurements,
    modality: str,
    algorithm_id: hd.sr.AlgorithmIdentification,
) -> list[hd.sr.Measurement]:
    """TID 300 items for what ``spec`` asks for; a mean of an empty mask is left out."""
    items = []
    if Measurement.VOLUME in spec.measurements:
        items.append(
            hd.sr.Measurement(
                name=VOLUME, value=measured.volume_ml, unit=MILLILITER, algorithm_id=algorithm_id
            )
        )
    if Measurement.MEAN_INTENSITY in spec.measurements:
        if modality not in MEAN_INTENSITY_BY_MODALITY:
            raise PipelineError(
                f"Segment {spec.label!r} asks for the mean intensity, but the node knows no "
                f"DICOM concept and unit for the intensity of modality {modality!r} "
                f"(known: {sorted(MEAN_INTENSITY_BY_MODALITY)})."
            )
        if measured.mean_intensity is not None:
            name, unit = MEAN_INTENSITY_BY_MODALITY[modality]
            items.append(
                hd.sr.Measurement(
                    name=name,
                    value=measured.mean_intensity,
                    unit=unit,
                    derivation=MEAN,
                    algorithm_id=algorithm_id,
                )
            )
    return items


def _check_consistent(
    segmentation: Dataset,
    segments: Sequence[SegmentSpec],
    measurements: Sequence[SegmentMeasurements],
    outlines: Sequence[PlanarOutline | None],
) -> None:
    declared = [(number, spec.label) for number, spec in enumerate(segments, start=1)]
    measured = [(m.segment_number, m.label) for m in measurements]
    in_seg = [(int(item.SegmentNumber), str(item.SegmentLabel)) for item in segmentation.SegmentSequence]
    if not declared == measured == in_seg or len(outlines) != len(segments):
        raise ResultValidationError(
            "The SR would not match its SEG: segments (number, label) declared "
            f"{declared}, measured {measured}, in SEG {segmentation.SOPInstanceUID} {in_seg}; "
            f"{len(outlines)} outline(s)."
        )
