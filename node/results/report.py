"""The TID 1500 Measurement Report document both SRs are made of, and its shared pieces.

The volumetric report (:mod:`node.results.sr`) and the planar one
(:mod:`node.results.planar_sr`) differ only in their measurement groups; the document around
them, the observation context, the Image Library and the coded concepts live here.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from node.imaging.volume import Volume
from node.results.part10 import as_written
from node.results.seg import DeviceInfo
from node.results.sources import has_slice_thickness, with_slice_thickness

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
#: Area (CID 7470 Linear, Area and Volume Measurements) in square millimetres (UCUM).
AREA = _CodedConcept("42798000", "SCT", "Area")
SQUARE_MILLIMETER = _CodedConcept("mm2", "UCUM", "square millimeter")
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

_IMAGING_MEASUREMENTS = "126010"

Group = (
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)


def image_library(images: Sequence[Dataset]) -> Dataset | None:
    """The Image Library (TID 1600) content item of ``images``: built once, placed in both
    reports (each entry reads its image's geometry, so 100 images take a noticeable time).

    An image without a Slice Thickness (Type 2 in the Image Plane module: empty or absent when
    unknown) has none in its entry either: the TID 1604 descriptor is optional (U), but highdicom
    writes it for every cross-sectional image, so such an image is described with a placeholder
    whose item is then taken out again.
    """
    if not images:
        return None
    unknown = {str(image.SOPInstanceUID) for image in images if not has_slice_thickness(image)}
    # the placeholder's value never reaches the report
    library = hd.sr.ImageLibrary([with_slice_thickness(image, 0.0) for image in images])[0]
    for group in library.ContentSequence:
        for entry in group.ContentSequence:
            if str(entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) in unknown:
                entry.ContentSequence = [
                    item for item in entry.ContentSequence if not _names(item, codes.DCM.SliceThickness)
                ]
    return library


def _names(item: Dataset, concept: Code) -> bool:
    name = item.ConceptNameCodeSequence[0]
    return bool(name.CodeValue == concept.value and name.CodingSchemeDesignator == concept.scheme_designator)


def measurement_report_document(
    groups: Sequence[Group],
    *,
    volume: Volume,
    device: DeviceInfo,
    library: Dataset | None,
    evidence: Sequence[Dataset],
    series_description: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
) -> Dataset:
    """The Comprehensive 3D SR that holds a TID 1500 report of ``groups``, volumetric or planar.

    ``library`` is the Image Library item (:func:`image_library`) of the images the groups
    reference; ``evidence`` every instance the report was made from or refers to (the
    Current Requested Procedure Evidence Sequence, PS3.3 C.17.2.3).

    highdicom builds the report. Its SR constructor deep-copies the content tree, parses it
    back into content items and searches it for references: 3 s for a hundred segments, all
    of it repeating what was just built. So the document is made around the report's root
    item alone and then given the report's content, which is what the constructor would have
    copied; the evidence is passed as is, every instance the tree references included.
    """
    report = hd.sr.MeasurementReport(
        observation_context=observation_context(device),
        procedure_reported=PROCEDURE_BY_MODALITY.get(volume.modality, IMAGING_PROCEDURE),
        imaging_measurements=groups,
    )
    root = report[0]
    content = list(root.ContentSequence)
    if library is not None:
        at = next(
            index
            for index, item in enumerate(content)
            if item.ConceptNameCodeSequence[0].CodeValue == _IMAGING_MEASUREMENTS
        )
        content.insert(at, library)  # TID 1500: the Image Library comes before the measurements
    shell = Dataset()
    for element in root:
        if element.keyword != "ContentSequence":
            shell.add(element)
    shell.ContentSequence = []
    document = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=shell,
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
    # A plain dataset from here on: highdicom's parsed view of the content (``.content``) is of
    # the shell and would mislead; hd.sr.Comprehensive3DSR.from_dataset parses the real one.
    finished = Dataset(document)
    finished.file_meta = document.file_meta
    finished.ContentSequence = content
    as_written(finished)
    return finished


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
