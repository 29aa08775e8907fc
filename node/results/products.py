"""Which result objects a job produces, built from one pipeline output.

Today every job writes a DICOM SEG and a TID 1500 SR (volumetric groups referencing the SEG's
segments). Each object gets its own new series; its UIDs come from ``uid(purpose)``, which
the worker derives from the job so a re-run attempt writes the same objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from node.config import ResultKind
from node.errors import ConfigurationError
from node.imaging.volume import Volume
from node.results.measure import SegmentMeasurements
from node.results.seg import AlgorithmInfo, DeviceInfo, build_segmentation
from node.results.sr import build_measurement_report
from node.timing import StageTimer
from pipelines.base import Pipeline, PipelineResult

SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902


@dataclass(frozen=True, eq=False)
class ResultInputs:
    """Everything the result objects are made from."""

    source_images: Sequence[Dataset]
    volume: Volume
    pipeline: Pipeline
    output: PipelineResult
    measurements: Sequence[SegmentMeasurements]
    device: DeviceInfo


@dataclass(frozen=True, eq=False)
class ResultObject:
    #: short name used in job results and messages: "SEG", "SR"
    kind: str
    dataset: Dataset


def build_result_objects(
    inputs: ResultInputs,
    *,
    kinds: Sequence[ResultKind],
    uid: Callable[[str], str],
    timer: StageTimer,
) -> list[ResultObject]:
    """The result objects named in ``kinds``, in that order of dependency (SR references SEG)."""
    wanted = set(kinds)
    if "sr" in wanted and "seg" not in wanted:
        raise ConfigurationError("result 'sr' references the SEG's segments: list 'seg' too")
    algorithm = AlgorithmInfo.from_pipeline(inputs.pipeline)
    with timer.stage("seg"):
        seg = build_segmentation(
            source_images=inputs.source_images,
            volume=inputs.volume,
            segments=inputs.pipeline.segments,
            result=inputs.output,
            algorithm=algorithm,
            device=inputs.device,
            series_instance_uid=uid("seg-series"),
            sop_instance_uid=uid("seg-instance"),
            series_number=SEG_SERIES_NUMBER,
        )
    objects = [ResultObject("SEG", seg)]
    if "sr" in wanted:
        with timer.stage("sr"):
            sr = build_measurement_report(
                source_images=inputs.source_images,
                volume=inputs.volume,
                segmentation=seg,
                segments=inputs.pipeline.segments,
                measurements=inputs.measurements,
                algorithm=algorithm,
                device=inputs.device,
                series_instance_uid=uid("sr-series"),
                sop_instance_uid=uid("sr-instance"),
                series_number=SR_SERIES_NUMBER,
            )
        objects.append(ResultObject("SR", sr))
    return objects
