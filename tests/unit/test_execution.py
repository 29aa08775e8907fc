"""Running pipelines: failures stay with their job, time limits, devices, warm reuse.

The worker tests drive the real worker loop and job table (SQLite); only its two network
edges are replaced, Orthanc's download by a synthetic series and the store by a list.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

import node.worker
from node.cli.pipelines import run_on_folder
from node.config import Settings
from node.db.jobs import JobStore, JobTrigger
from node.delivery.base import Delivered, Destination, TestOutcome
from node.errors import InputSeriesError, OrthancError, PipelineError
from node.imaging.series import build_volume
from node.imaging.volume import Volume
from node.pipeline.base import (
    Code,
    DeviceKind,
    Finding,
    Pipeline,
    PipelineResult,
    Quantity,
    Runtime,
    SegmentSpec,
    SeriesCriteria,
)
from node.pipeline.registry import PipelineRegistry
from node.results.identity import ResultIdentity
from node.results.part10 import part10_bytes
from node.run.device import DeviceUnavailableError, claimable_pipelines, resolve_runtime, runtime_resolver
from node.run.execution import PipelineTimeoutError, amp_dtype, run_pipeline
from node.run.warm import WarmPipelines
from node.worker import Worker
from tests.factories import make_series, segment_mask

DIST = Path(__file__).resolve().parents[1] / "fixtures" / "entry_point_dist"
TISSUE = Code("85756007", "SCT", "Tissue")
BONE = Code("3138006", "SCT", "Bone")
MUSCLE = Code("91727004", "SCT", "Muscle")


class TwoSegments(Pipeline):
    name = "two-segments"
    version = "1.0"
    description = ""
    accepts = SeriesCriteria(modalities=frozenset({"CT"}))
    segments = (
        SegmentSpec("Bone", TISSUE, BONE, (241, 214, 145)),
        SegmentSpec("Muscle", TISSUE, MUSCLE, (192, 104, 88)),
    )
    #: what run() returns, set by each test
    answer: ClassVar[object] = None

    def run(self, volume: Volume) -> PipelineResult:
        answer = type(self).answer
        if isinstance(answer, BaseException):
            raise answer
        return answer(volume)  # type: ignore[operator]


class GpuOnly(TwoSegments):
    name = "gpu-only"
    devices = frozenset({DeviceKind.CUDA})
    amp = True


class Either(TwoSegments):
    name = "either"
    devices = frozenset({DeviceKind.CPU, DeviceKind.CUDA})
    amp = True
    runtimes: ClassVar[list[Runtime]] = []

    def load(self) -> None:
        type(self).runtimes.append(self.runtime)


def volume(shape: tuple[int, int, int] = (4, 5, 6)) -> Volume:
    return Volume(
        array=np.arange(np.prod(shape), dtype=np.float32).reshape(shape),
        spacing=(3.0, 0.9, 0.9),
        origin=(0.0, 0.0, 0.0),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        slice_direction=(0.0, 0.0, 1.0),
        modality="CT",
        series_instance_uid="1.2.3",
        frame_of_reference_uid="1.2.3.4",
        source_instance_uids=tuple(f"1.2.3.{k}" for k in range(shape[0])),
    )


def answering(answer: object) -> TwoSegments:
    TwoSegments.answer = answer
    return TwoSegments()


# -- failures name the pipeline ----------------------------------------------------------------


def test_a_pipeline_out_of_host_memory_fails_with_what_an_admin_can_do():
    pipeline = answering(MemoryError())

    with pytest.raises(
        PipelineError,
        match=r"^Pipeline 'two-segments' 1.0 ran out of memory on a volume of 4 x 5 x 6 voxels \(0 MiB as "
        r"the pipeline receives it\): give the worker more memory",
    ):
        run_pipeline(pipeline, volume())


def test_an_exception_in_the_pipeline_becomes_a_pipeline_error_that_names_it():
    pipeline = answering(KeyError("weights"))

    with pytest.raises(PipelineError, match=r"Pipeline 'two-segments' 1.0 failed: KeyError: 'weights'"):
        run_pipeline(pipeline, volume())


def test_an_input_series_error_from_the_pipeline_stays_one():
    pipeline = answering(InputSeriesError("Series 1.2.3 is blank."))

    with pytest.raises(InputSeriesError, match="is blank"):
        run_pipeline(pipeline, volume())


def test_a_mask_of_the_wrong_shape_is_refused_with_both_shapes():
    pipeline = answering(
        lambda v: PipelineResult(masks={"Bone": np.zeros((4, 5, 5), bool), "Muscle": v.array > 0})
    )

    with pytest.raises(
        PipelineError, match=r"'two-segments' 1.0 returned a mask for segment 'Bone' of shape \(4, 5, 5\)"
    ):
        run_pipeline(pipeline, volume())


def test_a_missing_mask_is_refused():
    pipeline = answering(lambda v: PipelineResult(masks={"Bone": v.array > 0}))

    with pytest.raises(PipelineError, match=r"returned no mask for declared segment\(s\) \['Muscle'\]"):
        run_pipeline(pipeline, volume())


def test_a_label_map_stays_one_label_map_on_the_source_grid():
    labels = np.zeros((4, 5, 6), dtype=np.int64)
    labels[1] = 1
    labels[2, :2] = 2
    pipeline = answering(lambda v: PipelineResult(label_map=labels))

    result = run_pipeline(pipeline, volume())

    assert result.masks == {}
    assert result.label_map is not None and result.label_map.dtype == np.uint8
    assert np.array_equal(result.label_map, labels)


def test_a_label_value_beyond_the_declared_segments_is_refused():
    pipeline = answering(lambda v: PipelineResult(label_map=np.full(v.shape, 3, dtype=np.uint8)))

    with pytest.raises(PipelineError, match="label map with value 3; it declares 2 segment"):
        run_pipeline(pipeline, volume())


def test_a_float_label_map_is_refused():
    pipeline = answering(lambda v: PipelineResult(label_map=np.zeros(v.shape, dtype=np.float32)))

    with pytest.raises(PipelineError, match="label map of dtype float32; it must hold integers"):
        run_pipeline(pipeline, volume())


def test_pipeline_measurements_and_findings_pass_through_checked():
    volume_code, ml = Code("118565006", "SCT", "Volume"), Code("ml", "UCUM", "milliliter")
    finding = Finding(Code("246112005", "SCT", "Severity"), Code("255604002", "SCT", "Mild"), segment="Bone")
    pipeline = answering(
        lambda v: PipelineResult(
            masks={"Bone": v.array > 5, "Muscle": v.array > 50},
            measurements={"Bone": (Quantity(volume_code, 1.5, ml),)},
            findings=(finding,),
        )
    )

    result = run_pipeline(pipeline, volume())

    assert result.measurements["Bone"][0].value == 1.5
    assert result.findings == (finding,)


def test_a_measurement_for_an_undeclared_segment_is_refused():
    quantity = Quantity(Code("118565006", "SCT", "Volume"), 1.0, Code("ml", "UCUM", "milliliter"))
    pipeline = answering(
        lambda v: PipelineResult(
            masks={"Bone": v.array > 0, "Muscle": v.array > 0}, measurements={"Fat": (quantity,)}
        )
    )

    with pytest.raises(PipelineError, match="measurements for 'Fat', which is not one of its segments"):
        run_pipeline(pipeline, volume())


def test_run_is_under_torch_inference_mode():
    import torch

    seen = []

    def answer(v: Volume) -> PipelineResult:
        seen.append(torch.is_inference_mode_enabled())
        return PipelineResult(masks={"Bone": v.array > 0, "Muscle": v.array > 0})

    run_pipeline(answering(answer), volume(), time_limit=30)

    assert seen == [True]


# -- time limits ---------------------------------------------------------------------------------


@pytest.fixture
def stuck() -> Iterator[threading.Event]:
    release = threading.Event()
    yield release
    release.set()


def test_a_pipeline_past_its_time_limit_fails_promptly_naming_pipeline_and_limit(stuck):
    pipeline = answering(lambda v: stuck.wait(30) and PipelineResult())
    started = time.perf_counter()

    with pytest.raises(PipelineTimeoutError, match=r"'two-segments' 1.0 ran past its time limit of 0.2 s"):
        run_pipeline(pipeline, volume(), time_limit=0.2)

    assert time.perf_counter() - started < 2


def test_an_instance_still_running_a_timed_out_study_is_not_run_again(stuck):
    pipeline = answering(lambda v: stuck.wait(30) and PipelineResult())
    with pytest.raises(PipelineTimeoutError):
        run_pipeline(pipeline, volume(), time_limit=0.1)

    with pytest.raises(PipelineError, match="still running a study that ran past its time limit"):
        run_pipeline(pipeline, volume(), time_limit=0.1)


# -- devices -------------------------------------------------------------------------------------


def no_gpu() -> int:
    return 0


def two_gpus() -> int:
    return 2


def test_auto_is_the_cpu_without_a_gpu():
    assert resolve_runtime(Either, cuda_count=no_gpu) == Runtime("cpu")


def test_auto_is_the_first_gpu_with_mixed_precision_when_there_is_one():
    assert resolve_runtime(Either, cuda_count=two_gpus) == Runtime("cuda:0", amp=True)


def test_the_worker_device_picks_the_gpu_and_amp_can_be_switched_off():
    runtime = resolve_runtime(Either, worker_device="cuda:1", amp=False, cuda_count=two_gpus)

    assert runtime == Runtime("cuda:1", amp=False)


def test_a_pipeline_setting_wins_over_the_worker_device():
    assert resolve_runtime(
        Either, pipeline_device="cpu", worker_device="cuda", cuda_count=two_gpus
    ) == Runtime("cpu")


def test_a_rule_based_pipeline_stays_on_the_cpu_and_never_asks_for_cuda():
    def must_not_be_asked() -> int:
        raise AssertionError("CUDA was probed for a CPU-only pipeline")

    assert resolve_runtime(TwoSegments, worker_device="cuda", cuda_count=must_not_be_asked) == Runtime("cpu")


def test_a_cuda_only_pipeline_without_a_gpu_is_a_clear_error():
    with pytest.raises(
        DeviceUnavailableError,
        match=r"'gpu-only' 1.0 needs a CUDA GPU \(it runs only on CUDA\), and this worker has none",
    ):
        resolve_runtime(GpuOnly, cuda_count=no_gpu)


def test_a_pipeline_set_to_cuda_on_a_cpu_worker_is_a_clear_error():
    with pytest.raises(DeviceUnavailableError, match="this worker is set to the CPU"):
        resolve_runtime(Either, pipeline_device="cuda", worker_device="cpu", cuda_count=two_gpus)


def test_a_gpu_index_the_worker_lacks_is_a_clear_error():
    with pytest.raises(DeviceUnavailableError, match=r"cuda:3, but this worker has 2 CUDA device\(s\)"):
        resolve_runtime(Either, pipeline_device="cuda:3", cuda_count=two_gpus)


def test_a_cpu_only_pipeline_set_to_cuda_is_a_clear_error():
    with pytest.raises(
        DeviceUnavailableError, match="runs only on the CPU, but its settings say device: cuda"
    ):
        resolve_runtime(TwoSegments, pipeline_device="cuda", cuda_count=two_gpus)


@pytest.mark.parametrize(("major", "dtype"), [(9, "bfloat16"), (8, "bfloat16"), (7, "float16")])
def test_autocast_uses_bfloat16_from_ampere_on_and_float16_before(major, dtype):
    fake_torch = SimpleNamespace(
        cuda=SimpleNamespace(get_device_capability=lambda index: (major, 0)),
        bfloat16="bfloat16",
        float16="float16",
    )

    assert amp_dtype(fake_torch, "cuda:1") == dtype


def test_warm_pipelines_give_each_instance_its_runtime_before_load():
    Either.runtimes = []
    settings = Settings.model_validate(
        {"worker_device": "cuda:1", "pipeline_settings": {"either": {"amp": False}}}
    )
    warm = WarmPipelines(PipelineRegistry([Either]), runtime=runtime_resolver(settings, cuda_count=two_gpus))

    instance = warm.get("either")

    assert Either.runtimes == [Runtime("cuda:1", amp=False)]
    assert instance.runtime == Runtime("cuda:1", amp=False)


def test_a_cpu_worker_leaves_cuda_only_pipelines_to_gpu_workers():
    registry = PipelineRegistry([TwoSegments, GpuOnly, Either])
    settings = Settings.model_validate(
        {"worker_device": "cpu", "pipeline_settings": {"either": {"device": "cuda"}}}
    )

    assert claimable_pipelines(registry, settings) == ["two-segments"]


def test_a_cpu_worker_still_claims_a_misconfigured_pipeline_so_its_job_says_why():
    registry = PipelineRegistry([TwoSegments])
    settings = Settings.model_validate(
        {"worker_device": "cpu", "pipeline_settings": {"two-segments": {"device": "cuda"}}}
    )

    assert claimable_pipelines(registry, settings) == ["two-segments"]


def test_workers_on_auto_claim_every_job():
    assert claimable_pipelines(PipelineRegistry([TwoSegments, GpuOnly]), Settings()) is None


def test_a_worker_limited_to_unknown_pipelines_is_an_error():
    settings = Settings.model_validate({"worker": {"pipelines": ["two-segments", "lung-nodules"]}})

    with pytest.raises(PipelineError, match="No pipeline is named 'lung-nodules'"):
        claimable_pipelines(PipelineRegistry([TwoSegments]), settings)


# -- the worker: one job fails, the next runs, the model stays loaded -----------------------------


class KeptInMemory(Destination):
    name = "memory"

    def __init__(self) -> None:
        self.kept: list[Dataset] = []

    def send(self, datasets: Sequence[Dataset]) -> list[Delivered]:
        self.kept += datasets
        return [Delivered(str(ds.SOPInstanceUID), f"memory/{len(self.kept)}", False) for ds in datasets]

    def test(self) -> TestOutcome:
        return TestOutcome(ok=True, message="kept in memory")


class OfflineWorker(Worker):
    """The worker with its network edges replaced: a synthetic series in, a list out."""

    def __init__(self, settings: Settings, series: list[Dataset], **options: Any) -> None:
        super().__init__(settings, worker_id="test-worker", **options)
        self.series = series
        self.destination = KeptInMemory()
        self.sender.destination = lambda name: self.destination  # type: ignore[method-assign]

    def fetch_input(self, job, pipeline):  # noqa: ARG002 - same signature as Worker's
        return list(self.series)

    def study_in_orthanc(self, job) -> bool:  # noqa: ARG002 - same signature as Worker's
        return True


@pytest.fixture
def third_party(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(DIST))


@pytest.fixture
def ct_series() -> list[Dataset]:
    stored = np.zeros((8, 40, 40), dtype=np.int16)  # -1024 HU after rescale
    stored[2:6, 10:30, 10:30] = 1024 + 40  # soft tissue
    stored[3:5, 15:25, 15:25] = 1024 + 700  # bone
    return make_series(stored, spacing=(3.0, 0.9, 0.9))


def worker_for(
    tmp_path: Path, series: list[Dataset], *, clock: Callable[[], datetime] | None = None, **settings: object
) -> OfflineWorker:
    config = Settings.model_validate(
        {
            "data_dir": str(tmp_path),
            # no Orthanc here, so no credentials to read
            "orthanc": {"authentication": False},
            "pipelines": ["example-bone", "example-broken", "example-slow"],
            "pipeline_settings": {
                name: {"results": ["seg"], "time_limit": 0.5}
                for name in ("example-bone", "example-broken", "example-slow")
            },
            **settings,
        }
    )
    return OfflineWorker(config, series, **({} if clock is None else {"clock": clock}))


def enqueue(store: JobStore, pipeline: str, version: str) -> int:
    job = store.enqueue(
        orthanc_study_id=f"orthanc-{pipeline}-{generate_uid()[-6:]}",
        study_instance_uid=generate_uid(),
        pipeline_name=pipeline,
        pipeline_version=version,
        trigger=JobTrigger.MANUAL,
    )
    assert job is not None
    return job.id


def test_a_failing_pipeline_fails_only_its_job_and_the_worker_takes_the_next(
    tmp_path, third_party, ct_series
):
    worker = worker_for(tmp_path, ct_series)
    broken = enqueue(worker.store, "example-broken", "0.0.1")
    good = enqueue(worker.store, "example-bone", "0.1.0")

    assert worker.run_one() and worker.run_one()

    failed, done = worker.store.get(broken), worker.store.get(good)
    assert failed.status == "failed"
    assert (
        "Pipeline 'example-broken' 0.0.1 failed: ZeroDivisionError: the model divided by zero" in failed.error
    )
    assert done.status == "done"
    assert done.result["segments"][0]["label"] == "Bone"
    assert [ds.Modality for ds in worker.destination.kept] == ["SEG"]


def test_a_worker_out_of_memory_outside_the_model_fails_the_job_and_lives(tmp_path, third_party, ct_series):
    worker = worker_for(tmp_path, ct_series)

    def too_large(job, pipeline):  # noqa: ARG001 - same signature as fetch_input
        raise MemoryError

    worker.fetch_input = too_large  # type: ignore[method-assign]
    job = enqueue(worker.store, "example-bone", "0.1.0")
    assert worker.run_one()
    failed = worker.store.get(job)
    assert failed.status == "failed"
    assert failed.error.startswith("the worker ran out of memory while processing the series")


def test_a_job_whose_orthanc_does_not_answer_goes_back_to_the_queue_uncounted(
    tmp_path, third_party, ct_series, monkeypatch
):
    worker = worker_for(tmp_path, ct_series)
    monkeypatch.setattr("node.worker.ORTHANC_DOWN_PAUSE", 0.01)

    def orthanc_down(job, pipeline):  # noqa: ARG001 - same signature as fetch_input
        raise OrthancError("Orthanc at http://127.0.0.1:8042 did not answer GET /studies/x: refused")

    worker.fetch_input = orthanc_down  # type: ignore[method-assign]
    job = enqueue(worker.store, "example-bone", "0.1.0")
    assert worker.run_one()
    released = worker.store.get(job)
    assert (released.status, released.attempts, released.error) == ("queued", 0, None)


def test_the_results_of_a_study_deleted_while_its_job_ran_go_nowhere(tmp_path, third_party, ct_series):
    worker = worker_for(tmp_path, ct_series)
    worker.study_in_orthanc = lambda job: False  # type: ignore[method-assign]
    job = enqueue(worker.store, "example-bone", "0.1.0")

    assert worker.run_one()

    failed = worker.store.get(job)
    assert (failed.status, failed.error) == (
        "failed",
        "the study was deleted from Orthanc while the job ran; its results were not stored or sent anywhere",
    )
    assert worker.destination.kept == []


def test_a_worker_loads_a_model_once_for_two_jobs(tmp_path, third_party, ct_series):
    import ai_node_example_pipelines as example

    example.ExampleBone.loads = 0
    worker = worker_for(tmp_path, ct_series)
    first = enqueue(worker.store, "example-bone", "0.1.0")
    second = enqueue(worker.store, "example-bone", "0.1.0")

    worker.run_one()
    model = worker.pipelines.get("example-bone").model
    worker.run_one()

    assert example.ExampleBone.loads == 1
    assert worker.pipelines.get("example-bone").model is model
    assert [worker.store.get(job).status for job in (first, second)] == ["done", "done"]


class WorkerExited(BaseException):
    """Stands in for the end of the worker process (os._exit) in the test."""


def test_a_pipeline_past_its_time_limit_fails_its_job_and_ends_the_worker(
    tmp_path, third_party, ct_series, monkeypatch
):
    import ai_node_example_pipelines as example

    exits: list[int] = []

    def exit_worker(status: int = 75) -> None:
        exits.append(status)
        raise WorkerExited

    monkeypatch.setattr(node.worker, "exit_worker", exit_worker)
    worker = worker_for(tmp_path, ct_series)
    slow = enqueue(worker.store, "example-slow", "0.0.1")
    try:
        with pytest.raises(WorkerExited):
            worker.run_one()
    finally:
        example.ExampleSlow.RELEASE.set()

    job = worker.store.get(slow)
    assert job.status == "failed"
    assert "Pipeline 'example-slow' 0.0.1 ran past its time limit of 0.5 s" in job.error
    assert exits == [75]


def test_a_worker_limited_to_some_pipelines_leaves_the_other_jobs_queued(tmp_path, third_party, ct_series):
    worker = worker_for(tmp_path, ct_series, worker={"pipelines": ["example-bone"]})
    other = enqueue(worker.store, "example-broken", "0.0.1")
    mine = enqueue(worker.store, "example-bone", "0.1.0")

    assert worker.run_one()
    assert not worker.run_one()

    assert worker.store.get(mine).status == "done"
    assert worker.store.get(other).status == "queued"


def test_the_volume_the_third_party_pipeline_saw_was_its_own_grid(third_party, ct_series):
    import ai_node_example_pipelines as example

    registry = PipelineRegistry.from_entry_points(enabled={"example-bone"})
    pipeline = WarmPipelines(registry).get("example-bone")
    source = build_volume(ct_series)

    result = run_pipeline(pipeline, source)

    seen = example.ExampleBone.seen[-1]
    assert seen.spacing == (1.5, 1.5, 1.5)
    assert seen.row_direction == (0.0, 0.0, 1.0)  # RAS: axis 2 superior
    assert np.array_equal(segment_mask(result, pipeline.segments, "Bone"), source.array >= 226)


def test_the_worker_and_pipelines_run_write_the_same_bytes_for_the_same_job_uid(
    tmp_path, third_party, ct_series
):
    created = datetime(2026, 12, 6, 8, 15, 30, tzinfo=UTC)
    (tmp_path / "worker").mkdir()
    worker = worker_for(
        tmp_path / "worker",
        ct_series,
        clock=lambda: created,
        pipeline_settings={"example-bone": {"results": ["seg", "sr", "planar-sr"], "time_limit": 30}},
    )
    job = worker.store.get(enqueue(worker.store, "example-bone", "0.1.0"))
    assert worker.run_one()
    assert worker.store.get(job.id).status == "done"
    folder = tmp_path / "series"
    folder.mkdir()
    for index, dataset in enumerate(ct_series):
        dataset.save_as(folder / f"{index}.dcm", enforce_file_format=True)

    summary = run_on_folder(
        worker.settings,
        "example-bone",
        folder,
        tmp_path / "out",
        identity=ResultIdentity.for_job(job.uid, created),
    )

    from_worker = [part10_bytes(dataset) for dataset in worker.destination.kept]
    from_command = [Path(name).read_bytes() for name in summary["files"]]
    assert [Path(name).name for name in summary["files"]] == ["SEG.dcm", "SR.dcm", "PLANAR-SR.dcm"]
    assert from_command == from_worker
