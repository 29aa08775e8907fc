"""The frames of a BINARY SEG: which ones, their functional groups, their packed bits.

highdicom builds every other part of the SEG (:mod:`node.results.seg`) and stays the reference
for these too, but not the tool: it makes one pydicom dataset per frame and copies each
segment's plane out of a (slices, rows, columns, segments) array, so its cost grows with
slices × segments, 3.4 s to build and 2.3 s to write the 5,957 frames of a 100-segment CT
result (../shared/PERFORMANCE.md), and the stacked array alone was 7.9 GB. Here the cost
follows the frames that are written: the non-empty (segment, slice) frames are found once from
per-slice counts (:class:`~node.pipeline.voxels.SegmentVoxels`), each slice's frames are packed
together, and the Per-frame Functional Groups are concatenated from pieces encoded once per
plane and once per segment, with pydicom's own encoder, as the bytes of a raw data element.
tests/unit/test_results_seg.py checks, frame by frame, that the result equals highdicom's.
"""

from __future__ import annotations

import copy
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from highdicom.spatial import VOLUME_INDEX_CONVENTION, get_normal_vector
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.tag import Tag

from node.errors import ResultValidationError
from node.pipeline.voxels import SegmentVoxels

PER_FRAME_FUNCTIONAL_GROUPS = Tag(0x5200, 0x9230)
_ITEM = b"\xfe\xff\x00\xe0"
_SEGMENT_NUMBER = Tag(0x0062, 0x000B)  # Referenced Segment Number
_IMAGE_POSITION = Tag(0x0020, 0x0032)  # Image Position (Patient)
#: the functional groups highdicom writes per frame of a SEG of single-frame source images
_PER_FRAME = ("DerivationImageSequence", "FrameContentSequence", "PlanePositionSequence")
_SEGMENT_IDENTIFICATION = "SegmentIdentificationSequence"
_SOURCE_IMAGES = Tag(0x0008, 0x2112)  # Source Image Sequence
_SOP_CLASS = Tag(0x0008, 0x1150)  # Referenced SOP Class UID
_SOP_INSTANCE = Tag(0x0008, 0x1155)  # Referenced SOP Instance UID


@dataclass(frozen=True)
class FrameTable:
    """The frames of a SEG in their order: segment by segment, planes along the normal."""

    #: (segment number, slice index of the volume), one per frame
    frames: tuple[tuple[int, int], ...]
    #: the Dimension Index Value of each slice that has a frame, 1-based
    position_index: dict[int, int]


def frame_table(
    voxels: SegmentVoxels, source_images: Sequence[Dataset], rows: int, columns: int
) -> FrameTable:
    """The frames to write, ordered as highdicom orders them.

    highdicom numbers plane positions by their distance along the normal of its volume index
    convention, and orders frames by segment, then position. A result with no voxels at all
    gets one empty frame per segment on the first plane (a SEG needs a frame, and viewers list
    the segments). Frames are added, empty, until the packed Pixel Data has an even length: the
    standard would pad one byte (PS3.5 7.1.1), but dcmjs, which OHIF 3.13 reads SEGs with,
    rejects Pixel Data longer than its packed size.
    """
    iop = [float(v) for v in source_images[0].ImageOrientationPatient]
    normal = get_normal_vector(iop, index_convention=VOLUME_INDEX_CONVENTION)
    distance = [float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)) for ds in source_images]
    frames = voxels.frames()
    if not frames:
        first = int(np.argmin(distance))
        frames = [(number, first) for number in range(1, voxels.count + 1)]
    bits = rows * columns
    taken = set(frames)
    used = sorted({k for _, k in frames}, key=lambda k: distance[k])
    spare = ((number, k) for number in range(1, voxels.count + 1) for k in used if (number, k) not in taken)
    while math.ceil(len(frames) * bits / 8) % 2:
        # a segment missing from a plane that has frames: no new plane position needed
        extra = next(spare, None)
        if extra is None:  # every segment is in every used plane: take a new plane
            extra = (1, next(k for k in range(len(source_images)) if (1, k) not in taken))
        frames.append(extra)
        taken.add(extra)
    planes = sorted({k for _, k in frames}, key=lambda k: distance[k])
    position_index = {k: index for index, k in enumerate(planes, start=1)}
    ordered = sorted(frames, key=lambda frame: (frame[0], position_index[frame[1]]))
    return FrameTable(frames=tuple(ordered), position_index=position_index)


def per_frame_functional_groups(
    template: Dataset,
    shared: Dataset,
    dimension_pointers: Sequence[int],
    source_images: Sequence[Dataset],
    table: FrameTable,
) -> RawDataElement:
    """The Per-frame Functional Groups Sequence (5200,9230) of every frame of ``table``.

    ``template`` is one per-frame item highdicom wrote for this SEG (with the same source
    images and segments); its structure is kept, its source image, position and segment are
    replaced. ``dimension_pointers`` are the Dimension Index Pointers of the SEG, in order.
    """
    expected = set(_PER_FRAME) | (
        {_SEGMENT_IDENTIFICATION} if _SEGMENT_IDENTIFICATION not in shared else set()
    )
    found = {element.keyword for element in template}
    if found != expected:
        raise ResultValidationError(
            f"highdicom wrote per-frame functional groups {sorted(found)}; the SEG frame writer "
            f"knows {sorted(expected)} (a highdicom upgrade?): the SEG cannot be written."
        )
    derivation = {k: _encoded(_derivation(template, source_images[k])) for k in table.position_index}
    position = {
        k: _encoded(
            DataElement(
                "PlanePositionSequence",
                "SQ",
                hd.PlanePositionSequence(
                    hd.CoordinateSystemNames.PATIENT, source_images[k].ImagePositionPatient
                ),
            )
        )
        for k in table.position_index
    }
    identification: dict[int, bytes] = {}
    if _SEGMENT_IDENTIFICATION in expected:
        for number in sorted({number for number, _ in table.frames}):
            item = copy.deepcopy(template.SegmentIdentificationSequence[0])
            item.ReferencedSegmentNumber = number
            identification[number] = _encoded(DataElement(_SEGMENT_IDENTIFICATION, "SQ", [item]))
    content = _FrameContent(template, dimension_pointers)
    parts = []
    for number, k in table.frames:
        body = derivation[k] + content.encoded(number, table.position_index[k]) + position[k]
        body += identification.get(number, b"")
        parts.append(_ITEM + struct.pack("<I", len(body)) + body)
    value = b"".join(parts)
    return RawDataElement(PER_FRAME_FUNCTIONAL_GROUPS, "SQ", len(value), value, 0, False, True)


def pack_frames(voxels: SegmentVoxels, table: FrameTable, rows: int, columns: int) -> bytes:
    """Pixel Data of a BINARY SEG: the frames' bits in frame order, least significant bit
    first, frame after frame without padding between them (PS3.5 8.1.1)."""
    bits = rows * columns
    frames = len(table.frames)
    index = {frame: i for i, frame in enumerate(table.frames)}
    by_plane: dict[int, list[int]] = {}
    for number, k in table.frames:
        by_plane.setdefault(k, []).append(number)
    if bits % 8 == 0:
        # each frame fills whole bytes: pack each plane's frames and put them in place
        packed = np.empty((frames, bits // 8), dtype=np.uint8)
        for k, numbers in by_plane.items():
            planes = voxels.planes(k, numbers).reshape(len(numbers), bits)
            packed[[index[(number, k)] for number in numbers]] = np.packbits(
                planes, axis=1, bitorder="little"
            )
        return packed.tobytes()
    # frames share bytes: lay the bits out in order, eight frames (a whole number of bytes) at a time
    out = bytearray()
    for start in range(0, frames, 8):
        chunk = table.frames[start : start + 8]
        bits_array = np.empty((len(chunk), bits), dtype=bool)
        for row, (number, k) in enumerate(chunk):
            bits_array[row] = voxels.plane(k, number).ravel()
        out += np.packbits(bits_array.ravel(), bitorder="little").tobytes()
    return bytes(out)


class _FrameContent:
    """The Frame Content Sequence item of a frame: highdicom's, with its Dimension Index Values."""

    def __init__(self, template: Dataset, pointers: Sequence[int]) -> None:
        self.pointers = [Tag(pointer) for pointer in pointers]
        unknown = [p for p in self.pointers if p not in (_SEGMENT_NUMBER, _IMAGE_POSITION)]
        if unknown:
            raise ResultValidationError(
                f"the SEG's dimensions point at {unknown}; the SEG frame writer knows only the "
                "segment number and the image position (a highdicom upgrade?)."
            )
        item = copy.deepcopy(template.FrameContentSequence[0])
        # placeholders whose bytes are found and replaced; UL values are always four bytes
        markers = [0xA1B2C3D0 + n for n in range(len(self.pointers))]
        item.DimensionIndexValues = markers if len(markers) > 1 else markers[0]
        encoded = _encoded(DataElement("FrameContentSequence", "SQ", [item]))
        first = encoded.index(struct.pack("<I", markers[0]))
        self.prefix = encoded[:first]
        self.suffix = encoded[first + 4 * len(markers) :]

    def encoded(self, number: int, position: int) -> bytes:
        values = [number if pointer == _SEGMENT_NUMBER else position for pointer in self.pointers]
        return self.prefix + struct.pack(f"<{len(values)}I", *values) + self.suffix


def _derivation(template: Dataset, source: Dataset) -> DataElement:
    """The template's Derivation Image Sequence pointing at ``source``. Only the two UIDs are
    new elements; every other element is the template's own object (it is only encoded), which
    spares a deep copy per plane."""
    derivation = template.DerivationImageSequence[0]
    reference = _sharing(derivation.SourceImageSequence[0])
    reference[_SOP_CLASS] = DataElement(_SOP_CLASS, "UI", source.SOPClassUID)
    reference[_SOP_INSTANCE] = DataElement(_SOP_INSTANCE, "UI", source.SOPInstanceUID)
    item = _sharing(derivation)
    item[_SOURCE_IMAGES] = DataElement(_SOURCE_IMAGES, "SQ", [reference])
    return DataElement("DerivationImageSequence", "SQ", [item])


def _sharing(dataset: Dataset) -> Dataset:
    """A new dataset holding ``dataset``'s element objects (replace an element, never change it)."""
    shared = Dataset()
    for tag in dataset.keys():
        shared[tag] = dataset.get_item(tag)
    return shared


def _encoded(element: DataElement) -> bytes:
    """One data element in Explicit VR Little Endian, as pydicom writes it."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_data_element(buffer, element)
    return buffer.getvalue()
