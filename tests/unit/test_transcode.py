"""Results in the transfer syntax a destination asks for (node.delivery.transcode)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless, generate_uid

from node.config import SegmentationKind
from node.delivery.transcode import TransferSyntaxChoice, transcoded
from node.imaging.series import build_volume
from node.pipeline.base import Code, PipelineResult, SegmentSpec
from node.pipeline.voxels import SegmentVoxels
from node.results.part10 import part10_bytes
from node.results.seg import AlgorithmInfo, DeviceInfo, build_segmentation
from tests.factories import make_series

TISSUE = Code("85756007", "SCT", "Tissue")
SEGMENTS = (
    SegmentSpec("fat", TISSUE, Code("55603005", "SCT", "Fat"), (230, 220, 70)),
    SegmentSpec("muscle", TISSUE, Code("91727004", "SCT", "Muscle"), (190, 40, 40)),
)


def _seg(kind: SegmentationKind) -> Dataset:
    """A SEG of the node's, staged and read back as the sender reads staged files."""
    datasets = make_series(np.zeros((5, 24, 24), dtype=np.int16))
    volume = build_volume(datasets)
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[1:4, 2:10, 3:12] = 1
    labels[2:5, 12:20, 10:22] = 2
    seg = build_segmentation(
        source_images=datasets,
        volume=volume,
        segments=SEGMENTS,
        voxels=SegmentVoxels.from_result(volume.shape, SEGMENTS, PipelineResult(label_map=labels)),
        algorithm=AlgorithmInfo("tissue", "1"),
        device=DeviceInfo.for_node(device_serial_number="t"),
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        segmentation_type=kind,
    )
    return pydicom.dcmread(io.BytesIO(part10_bytes(seg)))


def _round_trip(dataset: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(part10_bytes(dataset)))


def test_explicit_leaves_the_staged_objects_as_they_are() -> None:
    seg = _seg(SegmentationKind.BINARY)

    assert transcoded([seg], TransferSyntaxChoice.EXPLICIT) == [seg]


def test_deflated_holds_the_same_data_set_in_fewer_bytes() -> None:
    seg = _seg(SegmentationKind.BINARY)

    (deflated,) = transcoded([seg], TransferSyntaxChoice.DEFLATED)

    read = _round_trip(deflated)
    assert read.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert len(part10_bytes(deflated)) < len(part10_bytes(seg)) / 2
    assert read.PixelData == seg.PixelData
    assert read.PerFrameFunctionalGroupsSequence == seg.PerFrameFunctionalGroupsSequence
    assert seg.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # the staged one unchanged


def test_rle_compresses_a_labelmap_seg_losslessly_and_leaves_the_staged_one_alone() -> None:
    seg = _seg(SegmentationKind.LABELMAP)
    original = seg.PixelData

    (rle,) = transcoded([seg], TransferSyntaxChoice.RLE)

    read = _round_trip(rle)
    assert read.file_meta.TransferSyntaxUID == RLELossless
    assert np.array_equal(read.pixel_array, seg.pixel_array)
    assert seg.PixelData == original and seg.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_rle_sends_what_it_cannot_hold_uncompressed() -> None:
    binary = _seg(SegmentationKind.BINARY)  # one bit a pixel: RLE encodes 8 or 16
    report = Dataset()  # no Pixel Data at all, as an SR
    report.file_meta = binary.file_meta

    assert transcoded([binary, report], TransferSyntaxChoice.RLE) == [binary, report]
