"""Build the TID 1500 Measurement Report that carries a pipeline's segment measurements.

A Comprehensive 3D SR (PS3.3 A.35.13) in its own series, holding one TID 1411 Volumetric ROI
group per segment, each pointing at its segment in the SEG. Groups that reference a SEG live
in an SR series of their own because OHIF 3.13 rejects a whole SR that mixes them with
planar groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from node.errors import PipelineError, ResultValidationError
from node.imaging.volume import Volume
from node.pipeline.base import Finding, Measurement, PipelineResult, SegmentSpec
from node.results.measure import SegmentMeasurements
from node.results.seg import (
    AlgorithmInfo,
    DeviceInfo,
    coded_concept,
    order_source_images,
)

#: Series Number (0020,0011) of a new SR series: the number docs/conformance.md lists.
DEFAULT_SR_SERIES_NUMBER = 9902

_CodedConcept = hd.sr.CodedConcept

#: Procedure Reported (TID 1500 row 4) by the modality of the measured series, from CID 100
#: Quantitative Diagnostic Imaging Procedures, which lists these LOINC codes; pixelmed's
#: validator reports a code outside CID 100 (e.g. SCT 77477000 "Computed tomography") as an error.
PROCEDURE_BY_MODALITY: dict[str, hd.sr.CodedConcept] = {
    "CT": _CodedConcept("25045-6", "LN", "CT unspecified body region"),
    "MR": _CodedConcept("25056-3", "LN", "MRI unspecified body region"),
}
#: Procedure Reported for any other modality (also in CID 100).
IMAGING_PROCEDURE = _CodedConcept("363679005", "SCT", "Imaging procedure")

#: Volume (CID 7469) in millilitres; UCUM units as TID 300 requires (PS3.16 CID 82).
VOLUME = _CodedConcept("118565006", "SCT", "Volume")
MILLILITER = _CodedConcept("ml", "UCUM", "milliliter")
#: Derivation of the mean intensity (CID 7464 General Region of Interest Measurement Modifiers).
MEAN = _CodedConcept("373098007", "SCT", "Mean")

#: Concept name and unit of a segment's mean intensity, by modality. CT values are Hounsfield
#: units after Rescale Slope/Intercept. MR values have no physical scale, so the UCUM arbitrary
#: unit says exactly that rather than pretending to a dimensionless ratio.
MEAN_INTENSITY_BY_MODALITY: dict[str, tuple[hd.sr.CodedConcept, hd.sr.CodedConcept]] = {
    "CT": (
        _CodedConcept("112031", "DCM", "Attenuation Coefficient"),
        _CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit"),
    ),
    "MR": (
        _CodedConcept("110852", "DCM", "MR signal intensity"),
        _CodedConcept("[arb'U]", "UCUM", "arbitrary unit"),
    ),
}


def build_measurement_report(
    *,
    source_images: Sequence[Dataset],
    volume: Volume,
    segmentation: hd.seg.Segmentation,
    segments: Sequence[SegmentSpec],
    measurements: Sequence[SegmentMeasurements],
    algorithm: AlgorithmInfo,
    device: DeviceInfo,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int = DEFAULT_SR_SERIES_NUMBER,
    pipeline_result: PipelineResult | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Return a Comprehensive 3D SR with a TID 1500 Measurement Report of ``measurements``.

    ``pipeline_result`` adds what the pipeline measured and concluded itself: its quantities
    (TID 300) and findings (Qualitative Evaluations) go into the group of their segment;
    findings about the whole study go into one TID 1501 group of their own.

    Each segment becomes one TID 1411 group: the Tracking Identifier and Tracking UID of its
    SEG segment (TID 4108), finding type and category from the :class:`SegmentSpec`, a
    Referenced Segment (DCM 121191) with the source series, and the measurements the segment
    asks for, each with the algorithm's name and version (TID 4019). The source images form
    the Image Library (TID 1600) and, with the SEG, the Current Requested Procedure Evidence
    Sequence (PS3.3 C.17.2.3).

    Raises :class:`~node.errors.ResultValidationError` when ``measurements``, ``segments`` and
    the SEG's Segment Sequence do not describe the same segments.
    """
    _check_consistent(segmentation, segments, measurements)
    ordered = order_source_images(source_images, volume)
    algorithm_id = algorithm.sr_identification()
    groups: list[
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = [
        _volumetric_group(
            spec=spec,
            measured=measured,
            segmentation=segmentation,
            volume=volume,
            algorithm_id=algorithm_id,
            sr_sop_instance_uid=sop_instance_uid,
            pipeline_result=pipeline_result,
        )
        for spec, measured in zip(segments, measurements, strict=True)
    ]
    study_findings = [f for f in (pipeline_result.findings if pipeline_result else ()) if f.segment is None]
    if study_findings:
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=generate_uid(entropy_srcs=[sop_instance_uid, "study-findings"]),
                    identifier="Study findings",
                ),
                algorithm_id=algorithm_id,
                qualitative_evaluations=[_qualitative(f) for f in study_findings],
            )
        )
    return measurement_report_document(
        groups,
        volume=volume,
        device=device,
        referenced_images=ordered,
        evidence=[*ordered, segmentation],
        series_description=f"AI SR {algorithm.name}",
        series_instance_uid=series_instance_uid,
        sop_instance_uid=sop_instance_uid,
        series_number=series_number,
    )


def measurement_report_document(
    groups: Sequence[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ],
    *,
    volume: Volume,
    device: DeviceInfo,
    referenced_images: Sequence[Dataset],
    evidence: Sequence[Dataset],
    series_description: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR that holds a TID 1500 report of ``groups``, volumetric or planar.

    ``referenced_images`` form the Image Library (TID 1600); ``evidence`` the Current
    Requested Procedure Evidence Sequence (PS3.3 C.17.2.3).
    """
    report = hd.sr.MeasurementReport(
        observation_context=observation_context(device),
        procedure_reported=PROCEDURE_BY_MODALITY.get(volume.modality, IMAGING_PROCEDURE),
        imaging_measurements=groups,
        referenced_images=referenced_images,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        **device.equipment(),
        series_description=series_description[:64],
        # Every measurement the pipeline asked for is in the report (Completion Flag), but no
        # person has verified it, and an automatic result is not the definitive report
        # (Verification Flag UNVERIFIED, Preliminary Flag PRELIMINARY; PS3.3 C.17.2).
        is_complete=True,
        is_verified=False,
        is_final=False,
    )


def observation_context(device: DeviceInfo) -> hd.sr.ObservationContext:
    """TID 1001 with a device observer (TID 1004): the node made these observations."""
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=device.observer_uid,
                name=device.model_name,
                manufacturer_name=device.manufacturer,
                model_name=device.model_name,
                serial_number=device.device_serial_number,
            ),
        )
    )


def _volumetric_group(
    *,
    spec: SegmentSpec,
    measured: SegmentMeasurements,
    segmentation: hd.seg.Segmentation,
    volume: Volume,
    algorithm_id: hd.sr.AlgorithmIdentification,
    sr_sop_instance_uid: str,
    pipeline_result: PipelineResult | None,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    number = measured.segment_number
    segment_item = segmentation.SegmentSequence[number - 1]
    tracking = hd.sr.TrackingIdentifier(
        uid=segment_item.get("TrackingUID")
        or generate_uid(entropy_srcs=[sr_sop_instance_uid, "segment", str(number)]),
        identifier=segment_item.get("TrackingID") or spec.label,
    )
    # Source series rather than a list of source images: an empty segment has no frames to
    # take source images from, and the series is what dcmqi and viewers resolve anyway.
    referenced_segment = hd.sr.ReferencedSegment(
        sop_class_uid=segmentation.SOPClassUID,
        sop_instance_uid=segmentation.SOPInstanceUID,
        segment_number=number,
        source_series=hd.sr.SourceSeriesForSegmentation(volume.series_instance_uid),
    )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_segment=referenced_segment,
        finding_type=coded_concept(spec.type),
        finding_category=coded_concept(spec.category),
        algorithm_id=algorithm_id,
        measurements=[
            *_measurements(spec, measured, volume.modality, algorithm_id),
            *_pipeline_quantities(spec, pipeline_result, algorithm_id),
        ],
        qualitative_evaluations=[
            _qualitative(finding)
            for finding in (pipeline_result.findings if pipeline_result else ())
            if finding.segment == spec.label
        ]
        or None,
    )


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
) -> None:
    declared = [(number, spec.label) for number, spec in enumerate(segments, start=1)]
    measured = [(m.segment_number, m.label) for m in measurements]
    in_seg = [(int(item.SegmentNumber), str(item.SegmentLabel)) for item in segmentation.SegmentSequence]
    if not declared == measured == in_seg:
        raise ResultValidationError(
            "The SR would not match its SEG: segments (number, label) declared "
            f"{declared}, measured {measured}, in SEG {segmentation.SOPInstanceUID} {in_seg}."
        )
