"""The other kinds of SEG the node can write, as OHIF 3.13 shows them: LABELMAP (a pipeline's
``seg_type: labelmap``) and the compressed transfer syntaxes a destination can ask for.

A fresh copy of the CT sample is processed by the node; from its BINARY SEG the test makes the
other kinds with the node's own code (``build_segmentation``, ``transcoded``), stores each into
the node's Orthanc as its own series, and opens each in OHIF as a user does.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from node.config import SegmentationKind
from node.delivery.transcode import TransferSyntaxChoice, transcoded
from node.devtools.samples import copy_with_new_uids
from node.imaging.series import build_volume
from node.pipeline.base import PipelineResult
from node.pipeline.voxels import SegmentVoxels
from node.results.part10 import part10_bytes
from node.results.seg import AlgorithmInfo, DeviceInfo, build_segmentation
from pipelines.ct_tissue import CtTissueSegmentation
from tests.e2e.conftest import WINDOW, RunningViewer
from tests.e2e.ohif import OhifPage
from tests.e2e.results import series_of_modality
from tests.integration.node_fixture import RunningNode
from tests.requirements import sample_series

pytestmark = pytest.mark.e2e

#: panel swatch colours may differ from the recommended ones by OHIF's CIELab rounding
COLOUR_TOLERANCE = 3


@dataclass(frozen=True)
class SegKind:
    name: str
    dataset: Dataset


@pytest.fixture(scope="module")
def kinds(e2e_node: RunningNode, tmp_path_factory: pytest.TempPathFactory) -> dict[str, SegKind]:
    folder = copy_with_new_uids(sample_series("ct"), tmp_path_factory.mktemp("kinds-ct"))
    uid = e2e_node.send(folder)
    (job,) = e2e_node.wait_for_jobs(uid, timeout=300)
    assert job["status"] == "done", job["error"]
    ((_, binary),) = series_of_modality(e2e_node, uid, "SEG")
    datasets = [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]
    volume = build_volume(datasets)
    labelmap = _labelmap_seg(binary, datasets, volume)
    made = {
        "binary, deflated": _renamed(binary, "AI SEG deflated", 9911, TransferSyntaxChoice.DEFLATED),
        "labelmap": _renamed(labelmap, "AI SEG labelmap", 9912, TransferSyntaxChoice.EXPLICIT),
        "labelmap, RLE": _renamed(labelmap, "AI SEG labelmap RLE", 9913, TransferSyntaxChoice.RLE),
    }
    for dataset in made.values():
        e2e_node.client.store_instance(part10_bytes(dataset))
    return {name: SegKind(name, dataset) for name, dataset in made.items()}


def _labelmap_seg(binary: Dataset, datasets: list[Dataset], volume) -> Dataset:
    """The node's SEG of the study as a LABELMAP: where segments overlap (the body holds the
    bone and the air), the later segment's number wins."""
    read = hd.seg.Segmentation.from_dataset(binary, copy=True)
    pixels = read.get_pixels_by_source_instance(
        list(volume.source_instance_uids), segment_numbers=list(range(1, len(read.SegmentSequence) + 1))
    )
    label_map = np.zeros(volume.shape, dtype=np.uint8)
    for number in range(1, pixels.shape[-1] + 1):
        label_map[pixels[..., number - 1] > 0] = number
    segments = CtTissueSegmentation.segments
    return build_segmentation(
        source_images=datasets,
        volume=volume,
        segments=segments,
        voxels=SegmentVoxels.from_result(volume.shape, segments, PipelineResult(label_map=label_map)),
        algorithm=AlgorithmInfo(CtTissueSegmentation.name, CtTissueSegmentation.version),
        device=DeviceInfo.for_node(device_serial_number="E2E"),
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        segmentation_type=SegmentationKind.LABELMAP,
    )


def _renamed(seg: Dataset, description: str, number: int, syntax: TransferSyntaxChoice) -> Dataset:
    """``seg`` as an object of its own series, in ``syntax``, read back as a receiver reads it."""
    copy = pydicom.dcmread(io.BytesIO(part10_bytes(seg)))
    copy.SeriesInstanceUID = generate_uid()
    copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    copy.SeriesDescription, copy.SeriesNumber = description, number
    (converted,) = transcoded([copy], syntax)
    return pydicom.dcmread(io.BytesIO(part10_bytes(converted)))


@pytest.fixture
def ohif(browser, viewer: RunningViewer, kinds: dict[str, SegKind]) -> Iterator[OhifPage]:
    context = browser.new_context(viewport=WINDOW, device_scale_factor=1)
    page = OhifPage(context.new_page(), viewer.url)
    try:
        page.open_study(str(next(iter(kinds.values())).dataset.StudyInstanceUID))
        yield page
    finally:
        context.close()


def test_each_kind_is_stored_as_written(kinds: dict[str, SegKind]) -> None:
    assert {
        name: (kind.dataset.SegmentationType, str(kind.dataset.file_meta.TransferSyntaxUID))
        for name, kind in kinds.items()
    } == {
        "binary, deflated": ("BINARY", pydicom.uid.DeflatedExplicitVRLittleEndian),
        "labelmap": ("LABELMAP", pydicom.uid.ExplicitVRLittleEndian),
        "labelmap, RLE": ("LABELMAP", pydicom.uid.RLELossless),
    }


@pytest.mark.parametrize("name", ["binary, deflated", "labelmap", "labelmap, RLE"])
def test_the_kind_loads_in_ohif_with_its_segments(
    name: str, kinds: dict[str, SegKind], ohif: OhifPage
) -> None:
    seg = kinds[name].dataset
    display_set_uid = ohif.open_display_set(str(seg.SeriesInstanceUID))

    problems = ohif.wait_for_segmentation(display_set_uid, len(seg.SegmentSequence))

    assert problems == [], f"{name}: {problems}"
    segmentation = ohif.segmentation(display_set_uid)
    assert [s["label"] for s in segmentation["segments"]] == [
        str(i.SegmentLabel) for i in seg.SegmentSequence
    ]


@pytest.mark.parametrize("name", ["binary, deflated", "labelmap", "labelmap, RLE"])
def test_the_kind_shows_the_recommended_colours(name: str, kinds: dict[str, SegKind], ohif: OhifPage) -> None:
    seg = kinds[name].dataset
    display_set_uid = ohif.open_display_set(str(seg.SeriesInstanceUID))
    assert ohif.wait_for_segmentation(display_set_uid, len(seg.SegmentSequence)) == []
    swatches = dict(ohif.segmentation_panel_rows())
    recommended = [
        hd.color.CIELabColor.from_dicom_value([int(v) for v in item.RecommendedDisplayCIELabValue]).to_rgb()
        for item in seg.SegmentSequence
    ]
    shown = [swatches[str(item.SegmentLabel)] for item in seg.SegmentSequence]
    if seg.SegmentationType == "LABELMAP" and _close(shown, [(0, 0, 0), *recommended[:-1]]):
        pytest.xfail(
            "OHIF 3.13.2 shows each segment of a LABELMAP SEG in the previous segment's colour (the "
            f"first in black, the background's): shown {shown}, recommended {recommended}. A node "
            "that shifted its colours to suit would show them wrong everywhere else, so BINARY "
            "stays the default (docs/conformance.md)"
        )
    assert _close(shown, recommended), f"shown {shown}, recommended {recommended}"


def _close(shown: list[tuple[int, int, int]], expected: list[tuple[int, int, int]]) -> bool:
    return all(
        max(abs(a - b) for a, b in zip(colour, wanted, strict=True)) <= COLOUR_TOLERANCE
        for colour, wanted in zip(shown, expected, strict=True)
    )
