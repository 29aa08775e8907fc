"""Build the DICOM Segmentation (SEG) a pipeline's masks become.

One Segmentation instance per new series (PS3.3 A.51), BINARY unless a pipeline's settings ask
for LABELMAP, one segment per
:class:`~node.pipeline.base.SegmentSpec`, every frame tied to the source instance it segments, so
viewers (OHIF, 3D Slicer) and dcmqi overlay it on the series it came from.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from node import MANUFACTURER, __version__
from node.config import SegmentationKind
from node.errors import ConfigurationError, InputSeriesError, NodeError, PipelineError
from node.imaging.volume import Volume
from node.pipeline.base import Code, Pipeline, SegmentSpec
from node.pipeline.voxels import SegmentVoxels
from node.results.part10 import as_written
from node.results.seg_frames import (
    PER_FRAME_FUNCTIONAL_GROUPS,
    frame_table,
    pack_frames,
    per_frame_functional_groups,
)
from node.results.sources import with_slice_thickness

log = logging.getLogger(__name__)

PIXEL_DATA = 0x7FE00010

#: Series Number (0020,0011) of a new SEG series: the number docs/conformance.md lists.
DEFAULT_SEG_SERIES_NUMBER = 9901

#: Content Creator Name (0070,0084), a PN: the node is not a person, but viewers list this
#: field as "created by", so it names the node instead of being left empty.
CONTENT_CREATOR_NAME = "AI^Node"

#: Maximum length of a LO (Long String) value, PS3.5 Table 6.2-1.
_LO_MAX = 64
#: Maximum length of an ST (Short Text) value, PS3.5 Table 6.2-1.
_ST_MAX = 1024
#: Maximum length of a CS (Code String) value, PS3.5 Table 6.2-1.
_CS_MAX = 16


class Equipment(TypedDict):
    manufacturer: str
    manufacturer_model_name: str
    software_versions: str
    device_serial_number: str


@dataclass(frozen=True)
class DeviceInfo:
    """The equipment that creates an object: the node (PS3.3 C.7.5.1 General Equipment)."""

    #: Manufacturer (0008,0070); the loop guard recognises the node's output by it
    manufacturer: str
    #: Manufacturer's Model Name (0008,1090)
    model_name: str
    #: Software Versions (0018,1020)
    software_version: str
    #: Device Serial Number (0018,1000): tells nodes of one installation apart
    device_serial_number: str

    def __post_init__(self) -> None:
        for keyword, value in (
            ("Manufacturer", self.manufacturer),
            ("ManufacturerModelName", self.model_name),
            ("SoftwareVersions", self.software_version),
            ("DeviceSerialNumber", self.device_serial_number),
        ):
            _check_lo(keyword, value, ConfigurationError)

    def equipment(self) -> Equipment:
        """The General Equipment attributes (PS3.3 C.7.5.1) as highdicom's keyword arguments."""
        return Equipment(
            manufacturer=self.manufacturer,
            manufacturer_model_name=self.model_name,
            software_versions=self.software_version,
            device_serial_number=self.device_serial_number,
        )

    @classmethod
    def for_node(cls, *, device_serial_number: str, model_name: str = "ai-node") -> DeviceInfo:
        """This node, with the manufacturer name the loop guard looks for."""
        return cls(
            manufacturer=MANUFACTURER,
            model_name=model_name,
            software_version=__version__,
            device_serial_number=device_serial_number,
        )

    @property
    def observer_uid(self) -> str:
        """Device Observer UID (TID 1004): stable for one node, so reports can be grouped by it."""
        return str(generate_uid(entropy_srcs=[self.manufacturer, self.model_name, self.device_serial_number]))


@dataclass(frozen=True)
class AlgorithmInfo:
    """The pipeline that produced the masks (Algorithm Name and Version, PS3.3 C.8.20.2)."""

    name: str
    version: str

    def __post_init__(self) -> None:
        _check_lo("AlgorithmName", self.name, PipelineError)
        _check_lo("AlgorithmVersion", self.version, PipelineError)

    @classmethod
    def from_pipeline(cls, pipeline: Pipeline | type[Pipeline]) -> AlgorithmInfo:
        return cls(name=pipeline.name, version=pipeline.version)

    def identification_sequence(self) -> hd.AlgorithmIdentificationSequence:
        """Segmentation Algorithm Identification Sequence (PS3.3 Table 10-19), family AI."""
        return hd.AlgorithmIdentificationSequence(
            name=self.name,
            family=codes.cid7162.ArtificialIntelligence,
            version=self.version,
        )

    def sr_identification(self) -> hd.sr.AlgorithmIdentification:
        """Algorithm Identification (TID 4019) of an SR's measurements, family AI."""
        return hd.sr.AlgorithmIdentification(
            name=self.name,
            version=self.version,
            family=codes.cid7162.ArtificialIntelligence,
        )


def build_segmentation(
    *,
    source_images: Sequence[Dataset],
    volume: Volume,
    segments: Sequence[SegmentSpec],
    voxels: SegmentVoxels,
    algorithm: AlgorithmInfo,
    device: DeviceInfo,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int = DEFAULT_SEG_SERIES_NUMBER,
    segmentation_type: SegmentationKind = SegmentationKind.BINARY,
) -> hd.seg.Segmentation:
    """Return a Segmentation of ``volume`` with one segment per entry of ``segments``.

    ``source_images`` are the datasets of the volume's slices in any order (metadata suffices);
    they are matched to ``volume.source_instance_uids`` by SOP Instance UID, so every frame
    references the instance its slice came from (Derivation Image Sequence, PS3.3
    C.7.6.16.2.6). A BINARY SEG holds only the non-empty (segment, slice) frames; a segment
    with no voxels is still described in the Segment Sequence (PS3.3 C.8.20.2). A LABELMAP SEG
    (PS3.3 C.8.20.2.1, Supplement 243) holds one frame per slice with the segment numbers as
    values; segments that overlap cannot be one, so they are written as BINARY instead.

    Raises :class:`~node.errors.InputSeriesError` when a slice's source image is missing.
    """
    # Slice Thickness is Type 1C in the SEG's Pixel Measures (dciodvfy requires it) and highdicom
    # copies it from the source images; where they do not say, the SEG states the depth of its
    # own voxels, one slice spacing, as it states Spacing Between Slices
    ordered = [
        with_slice_thickness(ds, volume.spacing[0]) for ds in order_source_images(source_images, volume)
    ]
    descriptions = [
        _segment_description(number, spec, algorithm, sop_instance_uid)
        for number, spec in enumerate(segments, start=1)
    ]
    header: dict[str, Any] = {
        "source_images": ordered,
        "segment_descriptions": descriptions,
        "series_instance_uid": series_instance_uid,
        "series_number": series_number,
        "sop_instance_uid": sop_instance_uid,
        "instance_number": 1,
        **device.equipment(),
        "content_label": content_label(algorithm.name),
        "content_description": _truncate(f"{algorithm.name} {algorithm.version}", _LO_MAX),
        "content_creator_name": CONTENT_CREATOR_NAME,
        "series_description": _truncate(f"AI SEG {algorithm.name}", _LO_MAX),
    }
    if segmentation_type is SegmentationKind.LABELMAP:
        if voxels.label_map is not None:
            # one frame per slice: highdicom's own path is as fast as the data allows
            return hd.seg.Segmentation(
                pixel_array=voxels.label_map,
                segmentation_type=hd.seg.SegmentationTypeValues.LABELMAP,
                omit_empty_frames=False,
                **header,
            )
        log.info("segments of %s overlap, so its SEG is BINARY, not LABELMAP", algorithm.name)
    return _binary(voxels, header, ordered)


def _binary(voxels: SegmentVoxels, header: dict[str, Any], ordered: Sequence[Dataset]) -> hd.seg.Segmentation:
    """highdicom writes the SEG with one frame per segment (a voxel each, on the first plane),
    which settles every attribute but the frames; then the frames are replaced by the real
    ones (:mod:`node.results.seg_frames`)."""
    rows, columns = int(ordered[0].Rows), int(ordered[0].Columns)
    if voxels.count > rows * columns:
        raise PipelineError(
            f"{voxels.count} segments on a {rows} × {columns} pixel matrix: a SEG frame cannot "
            "tell that many segments apart."
        )
    stub = np.zeros(voxels.shape, dtype=np.min_scalar_type(voxels.count))
    stub[0].flat[: voxels.count] = np.arange(1, voxels.count + 1)
    segmentation = hd.seg.Segmentation(
        pixel_array=stub, segmentation_type=hd.seg.SegmentationTypeValues.BINARY, **header
    )
    template = segmentation.PerFrameFunctionalGroupsSequence[0]
    table = frame_table(voxels, ordered, rows, columns)
    segmentation[PER_FRAME_FUNCTIONAL_GROUPS] = per_frame_functional_groups(
        template,
        segmentation.SharedFunctionalGroupsSequence[0],
        [int(item.DimensionIndexPointer) for item in segmentation.DimensionIndexSequence],
        ordered,
        table,
    )
    segmentation.NumberOfFrames = len(table.frames)
    # OB, as highdicom writes BINARY frames (PS3.5 8.1.1); said outright because the writer
    # below does not resolve an ambiguous VR
    segmentation.add_new(PIXEL_DATA, "OB", pack_frames(voxels, table, rows, columns))
    # the raw per-frame groups are copied as they are only into a dataset written as it was built
    as_written(segmentation)
    return segmentation


def order_source_images(source_images: Sequence[Dataset], volume: Volume) -> list[Dataset]:
    """Return the source datasets in the volume's slice order, matched by SOP Instance UID.

    Raises :class:`~node.errors.InputSeriesError` when a slice's instance is missing or does not
    belong to the volume's series, frame of reference or pixel matrix.
    """
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source_images}
    ordered = []
    for index, uid in enumerate(volume.source_instance_uids):
        dataset = by_uid.get(uid)
        if dataset is None:
            raise InputSeriesError(
                f"The source image of slice {index} (SOP Instance UID {uid}) is not among the "
                f"{len(source_images)} source images given; a SEG frame cannot reference it."
            )
        for keyword, expected in (
            ("SeriesInstanceUID", volume.series_instance_uid),
            ("FrameOfReferenceUID", volume.frame_of_reference_uid),
            ("Rows", volume.shape[1]),
            ("Columns", volume.shape[2]),
        ):
            found = dataset.get(keyword)
            if found != expected:
                raise InputSeriesError(
                    f"Source image {uid} has {keyword} {found!r}; the volume has {expected!r}."
                )
        ordered.append(dataset)
    return ordered


def content_label(pipeline_name: str) -> str:
    """Content Label (0070,0080) from a pipeline name: a CS, so upper case, digits, space and
    underscore only, at most 16 characters (PS3.5 Table 6.2-1)."""
    label = re.sub(r"[^A-Z0-9_ ]", "_", pipeline_name.upper()).strip()[:_CS_MAX].rstrip()
    return label or "AI_SEGMENTATION"


def coded_concept(code: Code) -> hd.sr.CodedConcept:
    """A pipeline's :class:`~node.pipeline.base.Code` as a highdicom coded concept."""
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def display_color(spec: SegmentSpec) -> hd.color.CIELabColor:
    """Recommended Display CIELab Value (0062,000D) from the segment's sRGB colour.

    DICOM stores colours as CIELab (PS3.3 C.10.7.1.1), not RGB. highdicom's conversion is the
    one PS3.3 describes: sRGB (IEC 61966-2-1) linearised, to CIE XYZ with the D65 white point,
    to CIELab, then scaled to 0-65535 (L* over 0-100, a* and b* over -128-127).
    """
    rgb = spec.rgb
    if len(rgb) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in rgb):
        raise PipelineError(
            f"Segment {spec.label!r} has colour {rgb!r}; it must be three integers 0-255 (sRGB)."
        )
    return hd.color.CIELabColor.from_rgb(*rgb)


def _segment_description(
    number: int, spec: SegmentSpec, algorithm: AlgorithmInfo, seg_sop_instance_uid: str
) -> hd.seg.SegmentDescription:
    if not spec.label or len(spec.label) > _LO_MAX:
        raise PipelineError(
            f"Segment label {spec.label!r} has {len(spec.label)} characters; SegmentLabel is "
            f"a LO of 1-{_LO_MAX} characters (PS3.5 Table 6.2-1)."
        )
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=spec.label,
        segmented_property_category=coded_concept(spec.category),
        segmented_property_type=coded_concept(spec.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm.identification_sequence(),
        # The SR's measurement group for this segment reuses these, so SEG and SR name one
        # finding the same way (TID 4108 Tracking Identifier).
        tracking_id=spec.label,
        tracking_uid=segment_tracking_uid(seg_sop_instance_uid, number),
        display_color=display_color(spec),
    )
    if spec.description:
        description.SegmentDescription = _truncate(spec.description, _ST_MAX)
    return description


def segment_tracking_uid(seg_sop_instance_uid: str, segment_number: int) -> str:
    """Tracking UID of one segment, derived from the SEG instance so it can be recomputed."""
    return str(generate_uid(entropy_srcs=[seg_sop_instance_uid, "segment", str(segment_number)]))


def _check_lo(keyword: str, value: str, error: type[NodeError]) -> None:
    if not value or len(value) > _LO_MAX or "\\" in value:
        raise error(
            f"{keyword} {value!r} has {len(value)} characters; it must be a LO of "
            f"1-{_LO_MAX} characters without backslash (PS3.5 Table 6.2-1)."
        )


def _truncate(text: str, limit: int) -> str:
    # Plain cut, no ellipsis: a non-ASCII character would need Specific Character Set ISO_IR 192.
    return text[:limit]
