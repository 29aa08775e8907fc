"""The processing chain: a series' volume through a pipeline into validated result objects.

One function, :func:`process_series`, for everything between "the volume is built" and "the
objects may leave the node": run the pipeline (:mod:`node.run`), measure its segments, build
the result objects (:mod:`node.results`), validate each. The worker, ``ai-node pipelines run``
and the benchmarks all call it, so a fix here reaches all three. It reads no network, writes
no file and touches no database: what the objects become (staged, delivered, written to a
folder) is the caller's business.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from pydicom.dataset import Dataset

from node.config import ResultKind, SegmentationKind
from node.imaging.volume import Volume
from node.pipeline.base import Pipeline, PipelineResult
from node.pipeline.voxels import SegmentVoxels
from node.results.identity import ResultIdentity
from node.results.measure import SegmentMeasurements, measure_segments
from node.results.part10 import ResultObject
from node.results.products import ResultInputs, build_result_objects
from node.results.seg import DeviceInfo
from node.results.validate import ValidationReport, require_valid
from node.run.execution import run_pipeline
from node.support.failpoints import failpoint
from node.support.timing import StageTimer

#: validators running at once: they wait on dciodvfy processes, which the cores share
_VALIDATORS = 4


@dataclass(frozen=True)
class ValidatorWarning:
    """One distinct warning of the validator, and on how many objects of a kind it appeared
    (a secondary capture repeats the same warning on every slice)."""

    kind: ResultKind
    message: str
    objects: int

    def __str__(self) -> str:
        return f"{self.kind.label} ({self.objects} objects): {self.message}"


@dataclass(frozen=True, eq=False)
class SeriesResult:
    """What the chain made of one series."""

    #: the pipeline's output, on the series' own grid
    output: PipelineResult
    measurements: tuple[SegmentMeasurements, ...]
    #: validated, in the order they are delivered: SEG, SR, planar SR, secondary captures
    objects: tuple[ResultObject, ...]
    warnings: tuple[ValidatorWarning, ...]
    #: seconds per stage of the chain (pipeline, measure, seg, sr, ..., validate)
    seconds: Mapping[str, float]


def process_series(
    volume: Volume,
    pipeline: Pipeline,
    source_images: Sequence[Dataset],
    *,
    kinds: Sequence[ResultKind],
    identity: ResultIdentity,
    device: DeviceInfo,
    seg_type: SegmentationKind = SegmentationKind.BINARY,
    time_limit: timedelta | None = None,
    timer: StageTimer | None = None,
) -> SeriesResult:
    """Run ``pipeline`` (loaded) on ``volume``; return its measurements and validated objects.

    ``source_images`` are the datasets ``volume`` was built from (the objects reference them);
    ``kinds`` the result objects to build (``pipeline_settings.NAME.results``), ``seg_type``
    the SEG's kind (``seg_type``); ``identity`` their UIDs and creation time. Stages are timed
    into ``timer`` when given, so a caller's own stages (fetch, stage, deliver) sit beside them.

    Raises :class:`~node.errors.PipelineError` (a
    :class:`~node.run.execution.PipelineTimeoutError` past ``time_limit``) for the pipeline's
    failures, :class:`~node.errors.InputSeriesError` for the series' and
    :class:`~node.errors.ResultValidationError` for an object that fails validation.
    """
    timer = timer or StageTimer()
    with timer.stage("pipeline"):
        failpoint("inference")
        output = run_pipeline(pipeline, volume, time_limit=time_limit)
    with timer.stage("measure"):
        voxels = SegmentVoxels.from_result(volume.shape, pipeline.segments, output)
        measurements = measure_segments(volume, pipeline.segments, voxels)
    inputs = ResultInputs(
        source_images=source_images,
        volume=volume,
        pipeline=pipeline,
        output=output,
        voxels=voxels,
        measurements=measurements,
        device=device,
        seg_type=seg_type,
    )
    failpoint("results")
    with _Validations() as validations:
        objects = build_result_objects(
            inputs, kinds=kinds, identity=identity, timer=timer, on_built=validations.start
        )
        with timer.stage("validate"):
            warnings = validations.finish()
    return SeriesResult(
        output=output,
        measurements=tuple(measurements),
        objects=tuple(objects),
        warnings=warnings,
        seconds=dict(timer.seconds),
    )


def _validated(obj: ResultObject) -> ValidationReport:
    return require_valid(obj.dataset, obj.kind.label, encoded=obj.encoded)


class _Validations:
    """Objects validated as they are built, side by side.

    The validator is a program of its own: an object's check runs on one core while the next
    object is built on the other, and each object is encoded once
    (:attr:`~node.results.part10.ResultObject.encoded`), the bytes that are then staged.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=_VALIDATORS, thread_name_prefix="validate")
        self._started: list[tuple[ResultObject, Future[ValidationReport]]] = []

    def __enter__(self) -> _Validations:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def start(self, obj: ResultObject) -> None:
        self._started.append((obj, self._pool.submit(_validated, obj)))

    def finish(self) -> tuple[ValidatorWarning, ...]:
        """The distinct warnings, counted. Raises :class:`~node.errors.ResultValidationError`
        for the first object, in order, that has errors."""
        found: Counter[tuple[ResultKind, str]] = Counter()
        for obj, report in self._started:
            found.update((obj.kind, warning) for warning in report.result().warnings)
        return tuple(ValidatorWarning(kind, message, times) for (kind, message), times in found.items())


def validate_objects(objects: Sequence[ResultObject]) -> tuple[ValidatorWarning, ...]:
    """Validate ``objects`` side by side (see :func:`process_series`)."""
    with _Validations() as validations:
        for obj in objects:
            validations.start(obj)
        return validations.finish()
