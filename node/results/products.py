"""Which result objects a job produces, built from one pipeline output.

A pipeline's ``results`` setting (``pipeline_settings: {NAME: {results: [...]}}``) names them:

- ``seg``: the DICOM SEG (``node.results.seg``);
- ``sr``: the volumetric TID 1500 SR, one TID 1411 group per SEG segment (``node.results.sr``);
  it references the SEG, so it needs ``seg``;
- ``planar-sr``: the planar TID 1500 SR, one TID 1410 outline per segment on a source image
  (``node.results.planar_sr``), the report OHIF 3.13 displays; it stands alone;
- ``secondary-capture``: one RGB image per source slice with the segments burned in
  (``node.results.secondary_capture``), for PACS that show no SEG; uncompressed RGB takes 3
  bytes a pixel against a 16-bit source's 2, so it adds 1.5 times the series' size and is off
  by default.

Each object gets its own new series; its UIDs and creation time come from a
:class:`~node.results.identity.ResultIdentity`, which the worker derives from the job so a
re-run attempt writes the same objects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from node.config import ResultKind, SegmentationKind, result_kinds_problem
from node.errors import ConfigurationError
from node.imaging.volume import Volume
from node.pipeline.base import Pipeline, PipelineResult
from node.pipeline.voxels import SegmentVoxels
from node.results.identity import ResultIdentity
from node.results.measure import SegmentMeasurements
from node.results.outline import PlanarOutline, segment_outlines
from node.results.part10 import ResultObject
from node.results.planar_sr import build_planar_measurement_report, has_outline
from node.results.report import image_library
from node.results.secondary_capture import build_secondary_captures
from node.results.seg import (
    AlgorithmInfo,
    DeviceInfo,
    build_segmentation,
    order_source_images,
    segment_tracking_uid,
)
from node.results.sources import result_sources
from node.results.sr import build_measurement_report, has_groups
from node.support.timing import StageTimer

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ResultInputs:
    """Everything the result objects are made from."""

    source_images: Sequence[Dataset]
    volume: Volume
    pipeline: Pipeline
    #: the pipeline's output on the volume's grid: its own measurements and findings
    output: PipelineResult
    #: the same output's segments, checked (:meth:`SegmentVoxels.from_result`)
    voxels: SegmentVoxels
    measurements: Sequence[SegmentMeasurements]
    device: DeviceInfo
    #: the SEG's Segmentation Type (``pipeline_settings.NAME.seg_type``)
    seg_type: SegmentationKind = SegmentationKind.BINARY


def check_result_kinds(kinds: Sequence[ResultKind]) -> None:
    """Raise :class:`~node.errors.ConfigurationError` for a combination that cannot be built.

    Settings files are checked when they load; this catches callers that pass kinds directly.
    """
    problem = result_kinds_problem(list(kinds))
    if problem:
        raise ConfigurationError(problem)


def build_result_objects(
    inputs: ResultInputs,
    *,
    kinds: Sequence[ResultKind],
    identity: ResultIdentity,
    timer: StageTimer,
    on_built: Callable[[ResultObject], None] | None = None,
) -> list[ResultObject]:
    """The result objects named in ``kinds``: SEG, SR (references SEG), planar SR, SC images.

    The outlines both SRs draw and their Image Library are made once. A report with no group
    to hold is left out (TID 1500 needs one): a planar SR when every segment is empty, and the
    SR then too unless the pipeline reported something about a segment; the zero volumes are in
    the job's result.
    """
    check_result_kinds(kinds)
    wanted = {ResultKind(kind) for kind in kinds}
    uid = identity.uid
    pipeline = inputs.pipeline
    algorithm = AlgorithmInfo.from_pipeline(pipeline)
    seg_instance_uid = uid("seg-instance")
    # The SEG's tracking UIDs, derived from its UID even when no SEG is written, so every
    # object names a segment's finding the same way.
    tracking_uids = [segment_tracking_uid(seg_instance_uid, n) for n in range(1, len(pipeline.segments) + 1)]
    objects: list[ResultObject] = []
    # headers the builders can read, however unusual the series' own (node.results.sources)
    sources = result_sources(inputs.source_images)

    def built(kind: ResultKind, dataset: Dataset) -> Dataset:
        identity.stamp(dataset)
        obj = ResultObject(kind, dataset)
        objects.append(obj)
        if on_built is not None:
            on_built(obj)
        return dataset

    outlines: tuple[PlanarOutline | None, ...] = ()
    library = None
    if wanted & {ResultKind.SR, ResultKind.PLANAR_SR}:
        with timer.stage("outlines"):
            outlines = segment_outlines(inputs.voxels, (inputs.volume.spacing[1], inputs.volume.spacing[2]))
            ordered = order_source_images(sources, inputs.volume)
            images = {outline.slice_index: ordered[outline.slice_index] for outline in outlines if outline}
            library = image_library([images[k] for k in sorted(images)])
    if ResultKind.SEG in wanted:
        with timer.stage("seg"):
            seg = build_segmentation(
                source_images=sources,
                volume=inputs.volume,
                segments=pipeline.segments,
                voxels=inputs.voxels,
                algorithm=algorithm,
                device=inputs.device,
                series_instance_uid=uid("seg-series"),
                sop_instance_uid=seg_instance_uid,
                segmentation_type=inputs.seg_type,
            )
            # highdicom draws this UID at random; derived, so the same job writes the same SEG
            organization = uid("seg-dimension-organization")
            seg.DimensionOrganizationSequence[0].DimensionOrganizationUID = organization
            for index in seg.DimensionIndexSequence:
                index.DimensionOrganizationUID = organization
        built(ResultKind.SEG, seg)
        if ResultKind.SR in wanted:
            if has_groups(outlines, inputs.output):
                with timer.stage("sr"):
                    sr = build_measurement_report(
                        source_images=sources,
                        volume=inputs.volume,
                        segmentation=seg,
                        segments=pipeline.segments,
                        measurements=inputs.measurements,
                        outlines=outlines,
                        library=library,
                        algorithm=algorithm,
                        device=inputs.device,
                        series_instance_uid=uid("sr-series"),
                        sop_instance_uid=uid("sr-instance"),
                        pipeline_result=inputs.output,
                    )
                built(ResultKind.SR, sr)
            else:
                log.info("no SR for %s: every segment is empty, there is nothing to report", pipeline.name)
    if ResultKind.PLANAR_SR in wanted:
        if has_outline(outlines):
            with timer.stage("planar-sr"):
                planar = build_planar_measurement_report(
                    source_images=sources,
                    volume=inputs.volume,
                    segments=pipeline.segments,
                    outlines=outlines,
                    measurements=inputs.measurements,
                    tracking_uids=tracking_uids,
                    library=library,
                    algorithm=algorithm,
                    device=inputs.device,
                    series_instance_uid=uid("planar-sr-series"),
                    sop_instance_uid=uid("planar-sr-instance"),
                )
            built(ResultKind.PLANAR_SR, planar)
        else:
            log.info(
                "no planar SR for %s: every segment is empty, there is nothing to outline", pipeline.name
            )
    if ResultKind.SECONDARY_CAPTURE in wanted:
        with timer.stage("secondary-capture"):
            captures = build_secondary_captures(
                source_images=sources,
                volume=inputs.volume,
                segments=pipeline.segments,
                voxels=inputs.voxels,
                measurements=inputs.measurements,
                algorithm=algorithm,
                device=inputs.device,
                series_instance_uid=uid("sc-series"),
                sop_instance_uids=[uid(f"sc-instance-{k}") for k in range(inputs.volume.shape[0])],
            )
        for image in captures:
            built(ResultKind.SECONDARY_CAPTURE, image)
    return objects
