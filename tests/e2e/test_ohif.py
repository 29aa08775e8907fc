"""The node's results as OHIF 3.13 shows them: `make viewer` in front of a real node, in Chromium.

A CT and a T1 MR are sent to a node and processed; each study is opened in OHIF through the
viewer of ``make viewer``, its SEG and SR series are loaded the way a user loads them (a
double-click on the thumbnail), and what OHIF draws is compared with the DICOM objects.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from tests.e2e.colour import hue_and_saturation, hue_distance
from tests.e2e.conftest import WINDOW, ProcessedStudy, RunningViewer
from tests.e2e.ohif import OhifPage
from tests.e2e.results import ReportedValue, SegmentProbe, placed_values, segment_probes, series_of_modality
from tests.integration.node_fixture import RunningNode

pytestmark = pytest.mark.e2e

STUDIES = ["ct", "mr"]

#: Largest hue difference accepted between a segment's colour and the overlay drawn over a grey
#: image. Blending a colour over grey keeps its hue exactly (every channel moves towards the
#: same grey value by the same factor); what is left is 8-bit rounding and OHIF's own CIELab
#: conversion (dcmjs), a few degrees at most.
HUE_TOLERANCE_DEGREES = 10
#: Below this HSV saturation a pixel counts as grey (the CT and MR images are greyscale).
GREY_SATURATION = 0.05
#: Smallest change of some channel (0-255) that showing a segment must make at its pixel.
MIN_OVERLAY_CHANGE = 8


@dataclass
class LoadedSeg:
    series_instance_uid: str
    dataset: Dataset
    display_set_uid: str
    probes: list[SegmentProbe]


@dataclass
class SegView:
    """A study opened in OHIF, with every SEG of the study loaded onto its source images."""

    study: ProcessedStudy
    ohif: OhifPage
    #: the first-run tour and banner OHIF showed when the study opened (none expected)
    overlays_at_open: list[str]
    segs: list[LoadedSeg]
    #: why a SEG did not load, one line per SEG that did not
    load_failures: list[str]
    screenshots: Path

    def loaded_segs(self) -> list[LoadedSeg]:
        """The SEGs, for a test that needs them all shown; fails it if one did not load."""
        if self.load_failures:
            pytest.fail("a SEG did not load in OHIF: " + "; ".join(self.load_failures))
        return self.segs


@pytest.fixture(scope="module", params=STUDIES)
def seg_view(
    request: pytest.FixtureRequest,
    browser,
    viewer: RunningViewer,
    e2e_node: RunningNode,
    processed_studies: dict[str, ProcessedStudy],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SegView]:
    study = processed_studies[request.param]
    screenshots = tmp_path_factory.mktemp(f"ohif-{study.name}-seg")
    context = browser.new_context(viewport=WINDOW, device_scale_factor=1)
    ohif = OhifPage(context.new_page(), viewer.url)
    try:
        ohif.open_study(study.study_instance_uid)
        segs = series_of_modality(e2e_node, study.study_instance_uid, "SEG")
        assert segs, f"the {study.name} study has no SEG series"
        loaded, failures = [], []
        for series_uid, dataset in segs:
            display_set_uid = ohif.open_display_set(series_uid)
            problems = ohif.wait_for_segmentation(display_set_uid, len(dataset.SegmentSequence))
            if problems:
                failures.append(f"SEG series {series_uid}: {problems}{_known_seg_limitation(dataset)}")
            loaded.append(
                LoadedSeg(series_uid, dataset, display_set_uid, segment_probes(dataset, study.folder))
            )
        ohif.page.screenshot(path=screenshots / "segs-opened.png")
        yield SegView(study, ohif, ohif.overlays_at_open, loaded, failures, screenshots)
    finally:
        context.close()


def _known_seg_limitation(seg: Dataset) -> str:
    """Why OHIF 3.13.2 with Orthanc cannot load ``seg``, if it is the case found so far."""
    pixels_per_frame = int(seg.Rows) * int(seg.Columns)
    data_bytes = -(-pixels_per_frame * int(seg.NumberOfFrames) // 8)
    if int(seg.BitsAllocated) == 1 and pixels_per_frame % 8 and data_bytes % 2:
        return (
            f". Known cause: this BINARY SEG's frames ({seg.Rows}x{seg.Columns} bits) do not end on "
            f"byte boundaries and its {data_bytes} bytes of pixel data take a padding byte; "
            "OHIF 3.13.2 (dcmjs) refuses padded bit-packed pixel data in the whole instance and "
            "falls back to single frames, which Orthanc cannot cut out of such pixel data (400)"
        )
    return ""


def test_ohif_opens_the_study_without_first_run_tour_or_banner(seg_view: SegView) -> None:
    assert seg_view.overlays_at_open == []


def test_every_seg_loads_in_ohif_without_error(seg_view: SegView) -> None:
    assert seg_view.load_failures == []
    assert seg_view.ohif.errors() == []
    for seg in seg_view.segs:
        segmentation = seg_view.ohif.segmentation(seg.display_set_uid)
        assert [s["label"] for s in segmentation["segments"]] == [
            str(item.SegmentLabel) for item in seg.dataset.SegmentSequence
        ]


def test_segmentation_panel_lists_every_segment_label(seg_view: SegView) -> None:
    segs = seg_view.loaded_segs()
    rows = seg_view.ohif.segmentation_panel_rows()
    expected = [str(item.SegmentLabel) for seg in segs for item in seg.dataset.SegmentSequence]
    assert [label for label, _ in rows] == expected


def test_segmentation_panel_shows_the_recommended_display_colours(seg_view: SegView) -> None:
    segs = seg_view.loaded_segs()
    swatches = dict(seg_view.ohif.segmentation_panel_rows())
    for seg in segs:
        for probe in seg.probes:
            shown = swatches[probe.label]
            assert max(abs(a - b) for a, b in zip(shown, probe.colour, strict=True)) <= 3, (
                f"{probe.label}: panel shows {shown}, the SEG recommends {probe.colour}"
            )


def test_overlay_inside_each_segment_has_the_segments_hue(seg_view: SegView) -> None:
    """At a pixel deep inside each segment, with only that segment shown, the drawn colour has
    the hue of the segment's Recommended Display CIELab Value; with no segment shown it is grey."""
    ohif = seg_view.ohif
    problems = []
    for seg in seg_view.loaded_segs():
        numbers = [probe.number for probe in seg.probes]
        try:
            for probe in seg.probes:
                ohif.show_image(probe.sop_instance_uid)
                x, y = ohif.page_position(probe.world)
                assert ohif.inside_viewport(x, y), (
                    f"{probe.label}: ({x:.0f}, {y:.0f}) is outside the viewport"
                )
                ohif.set_visible_segments(seg.display_set_uid, [], numbers)
                bare = ohif.pixel(x, y)
                ohif.set_visible_segments(seg.display_set_uid, [probe.number], numbers)
                drawn = ohif.pixel(x, y)
                ohif.page.screenshot(path=seg_view.screenshots / f"segment-{probe.number}.png")
                problem = _overlay_problem(probe.colour, bare, drawn)
                if problem:
                    problems.append(
                        f"{probe.label} at pixel {probe.pixel} of image {probe.sop_instance_uid} "
                        f"(depth {probe.depth:.1f} px, page {x:.0f},{y:.0f}): {problem}"
                    )
        finally:
            ohif.set_visible_segments(seg.display_set_uid, numbers, numbers)
    assert problems == [], f"screenshots in {seg_view.screenshots}"


def _overlay_problem(
    colour: tuple[int, int, int], bare: tuple[float, float, float], drawn: tuple[float, float, float]
) -> str | None:
    """What is wrong with the pixel ``drawn`` with the segment shown (``bare``: none shown)."""
    shown = f"drawn {tuple(round(c) for c in drawn)}, without overlay {tuple(round(c) for c in bare)}"
    if hue_and_saturation(bare)[1] >= GREY_SATURATION:
        return f"the image is not grey there: {shown}"
    if max(abs(a - b) for a, b in zip(drawn, bare, strict=True)) < MIN_OVERLAY_CHANGE:
        return f"no overlay is drawn: {shown}"
    expected_hue, expected_saturation = hue_and_saturation(colour)
    hue, saturation = hue_and_saturation(drawn)
    if expected_saturation < GREY_SATURATION:  # a grey segment colour has no hue to compare
        return None if saturation < GREY_SATURATION else f"grey {colour} expected: {shown}"
    if hue_distance(hue, expected_hue) > HUE_TOLERANCE_DEGREES:
        return f"hue {hue:.0f}° where the SEG recommends {colour}, hue {expected_hue:.0f}°: {shown}"
    return None


@dataclass
class SrView:
    study: ProcessedStudy
    ohif: OhifPage
    screenshots: Path


@pytest.fixture(scope="module", params=STUDIES)
def sr_view(
    request: pytest.FixtureRequest,
    browser,
    viewer: RunningViewer,
    processed_studies: dict[str, ProcessedStudy],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SrView]:
    study = processed_studies[request.param]
    context = browser.new_context(viewport=WINDOW, device_scale_factor=1)
    ohif = OhifPage(context.new_page(), viewer.url)
    try:
        ohif.open_study(study.study_instance_uid)
        yield SrView(study, ohif, tmp_path_factory.mktemp(f"ohif-{study.name}-sr"))
    finally:
        context.close()


_DRAWN_VALUE = re.compile(r"^(?P<name>[^:]+): (?P<value>-?\d+(?:\.\d+)?) (?P<unit>\S+)$")


def test_every_sr_opens_and_shows_each_measurement_with_value_and_unit(
    sr_view: SrView, e2e_node: RunningNode
) -> None:
    """Every SR of the node opens in OHIF without an error, and every numeric measurement OHIF
    can place is drawn with its value and unit.

    OHIF 3.13 draws an SR's measurements in its SR viewport one at a time (the arrows in the
    viewport's corner step through them), as "<concept>: <value> <UCUM unit>", merging the
    groups of one tracking UID: the volumetric SR's TID 1411 group (volume, mean) and the TID
    1410 group with the segment's outline (area). Before the outline was added, the volumetric
    SR failed with "Cannot read properties of undefined (reading 'ReferencedSOPSequence')".
    Its measurement panel stays empty: it lists tracked measurements only, and OHIF tracks a
    group only when its Tracking Identifier names a Cornerstone3D tool.
    """
    ohif = sr_view.ohif
    reports = series_of_modality(e2e_node, sr_view.study.study_instance_uid, "SR")
    assert reports, "the study has no SR"
    for series_uid, dataset in reports:
        values = placed_values(dataset)
        assert values, f"SR series {series_uid} has no measurement OHIF can place on an image"
        display_set_uid = ohif.open_display_set(series_uid)
        ohif.wait_for_sr(display_set_uid)
        drawn: set[tuple[str, float, str]] = set()
        for step in range(len({value.group for value in values})):
            if step:
                ohif.next_measurement()
            texts = ohif.drawn_annotation_texts()
            ohif.page.screenshot(path=sr_view.screenshots / f"sr-{series_uid[-6:]}-{step}.png")
            for text in texts:
                match = _DRAWN_VALUE.match(text)
                if match:
                    drawn.add((match["name"], float(match["value"]), match["unit"]))
        assert ohif.errors() == []
        missing = [value for value in values if not _is_drawn(value, drawn)]
        assert missing == [], f"OHIF drew {sorted(drawn)}; screenshots in {sr_view.screenshots}"


def _is_drawn(value: ReportedValue, drawn: set[tuple[str, float, str]]) -> bool:
    # OHIF writes the value with two decimals (Number.toFixed(2)).
    return any(
        name == value.name and unit == value.unit and abs(number - value.value) <= 0.0051
        for name, number, unit in drawn
    )


def test_viewer_prints_the_address_of_the_latest_processed_study(
    viewer: RunningViewer, processed_studies: dict[str, ProcessedStudy]
) -> None:
    port = viewer.url.rsplit(":", 1)[1]
    addresses = {
        f"http://localhost:{port}/viewer?StudyInstanceUIDs={study.study_instance_uid}"
        for study in processed_studies.values()
    }
    printed = re.search(r"Latest study with AI results: (\S+)", viewer.banner)
    assert printed is not None, viewer.banner
    assert printed.group(1) in addresses
