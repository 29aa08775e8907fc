"""Running a pipeline on a volume inside a worker (or ``ai-node pipelines run``).

:func:`run_pipeline` is the one way a pipeline runs: it brings the volume onto the grid the
pipeline asks for (:mod:`node.run.resample`), calls ``run()`` in a thread with a deadline, under
``torch.inference_mode`` and, on CUDA where allowed, ``torch.autocast``; checks what came back;
and maps it onto the source voxels. Whatever goes wrong becomes a :class:`PipelineError` that
names the pipeline, so it fails only its own job.

:func:`resolve_runtime` picks the device for a pipeline from its declaration, its settings and
the worker's; :func:`claimable_pipelines` tells a worker which jobs it may claim.

A thread cannot be killed. When a pipeline exceeds its time limit the job fails with
:class:`PipelineTimeoutError`, and the worker then ends its process (:func:`exit_worker`) so
that the supervisor starts a fresh one: the runaway thread still holds the model, the CPU or
the GPU, and only the end of the process frees them.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from node.errors import InputSeriesError, NodeError, PipelineError
from node.imaging.volume import Volume
from node.run.resample import ModelSpace, to_model_space
from node.pipeline.base import (
    Code,
    DeviceKind,
    Finding,
    Pipeline,
    PipelineResult,
    Quantity,
    Runtime,
)

if TYPE_CHECKING:
    from node.config import Settings
    from node.pipeline.registry import PipelineRegistry

log = logging.getLogger(__name__)

#: exit status of a worker that ended itself after a pipeline ran past its time limit
#: (EX_TEMPFAIL of sysexits.h: try again, with a fresh process)
EXIT_PIPELINE_TIMEOUT = 75

_DEVICE_SETTING = re.compile(r"auto|cpu|cuda(?::\d+)?")


class PipelineTimeoutError(PipelineError):
    """A pipeline ran past its time limit; its thread may still be running."""


class DeviceUnavailableError(PipelineError):
    """A pipeline needs a device this worker does not have (CUDA, usually)."""


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------


def cuda_device_count() -> int:
    """Number of CUDA devices torch can use here; 0 without torch or without a GPU."""
    try:
        import torch
    except ImportError:
        return 0
    if not torch.cuda.is_available():
        return 0
    return int(torch.cuda.device_count())


@dataclass(frozen=True)
class DeviceRequest:
    """A device setting, parsed: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

    kind: DeviceKind | None  # None: auto
    index: int | None = None

    @classmethod
    def parse(cls, text: str, *, setting: str) -> DeviceRequest:
        if not _DEVICE_SETTING.fullmatch(text):
            raise PipelineError(f"{setting} is {text!r}; it must be auto, cpu, cuda or cuda:N.")
        if text == "auto":
            return cls(None)
        if text == "cpu":
            return cls(DeviceKind.CPU)
        _, _, index = text.partition(":")
        return cls(DeviceKind.CUDA, int(index) if index else None)

    def __str__(self) -> str:
        if self.kind is None:
            return "auto"
        if self.kind is DeviceKind.CUDA and self.index is not None:
            return f"cuda:{self.index}"
        return self.kind.value


def resolve_runtime(
    pipeline: type[Pipeline],
    *,
    pipeline_device: str = "auto",
    worker_device: str = "auto",
    amp: bool = True,
    cuda_count: Callable[[], int] = cuda_device_count,
) -> Runtime:
    """The device and precision pipeline class ``pipeline`` runs with on this worker.

    The pipeline's own setting (``pipeline_settings.NAME.device``) wins over the worker's
    (``worker_device`` / ``ai-node worker --device``); ``auto`` means CUDA when the pipeline
    can use it and a GPU is present, else the CPU. A pipeline that can only use CUDA, or is
    set to it, on a worker without a GPU (or a worker set to ``cpu``) raises
    :class:`DeviceUnavailableError`, which fails the job with that explanation.
    ``cuda_count`` is asked only when CUDA is a possibility (it imports torch).
    """
    name = pipeline.name
    label = f"Pipeline '{name}' {pipeline.version}"
    own = DeviceRequest.parse(pipeline_device, setting=f"pipeline_settings.{name}.device")
    worker = DeviceRequest.parse(worker_device, setting="worker_device")
    can_cpu = DeviceKind.CPU in pipeline.devices
    can_cuda = DeviceKind.CUDA in pipeline.devices

    need: str | None = None  # why CUDA is required; None: CUDA is optional
    if own.kind is DeviceKind.CPU:
        if not can_cpu:
            raise DeviceUnavailableError(f"{label} runs only on CUDA, but its settings say device: cpu.")
        return Runtime("cpu")
    if own.kind is DeviceKind.CUDA:
        if not can_cuda:
            raise DeviceUnavailableError(f"{label} runs only on the CPU, but its settings say device: {own}.")
        need = f"pipeline_settings.{name}.device is {own}"
    elif not can_cuda:
        return Runtime("cpu")
    elif not can_cpu:
        need = "it runs only on CUDA"
    elif worker.kind is DeviceKind.CPU:
        return Runtime("cpu")
    elif worker.kind is DeviceKind.CUDA:
        need = f"this worker's device is {worker}"

    if need is not None and worker.kind is DeviceKind.CPU:
        raise DeviceUnavailableError(
            f"{label} needs a CUDA GPU ({need}), and this worker is set to the CPU "
            "(worker_device / ai-node worker --device cpu)."
        )
    count = cuda_count()
    if count == 0:
        if need is not None:
            raise DeviceUnavailableError(
                f"{label} needs a CUDA GPU ({need}), and this worker has none (torch sees no CUDA "
                f"device); run it on a worker with a GPU (ai-node worker --device cuda --pipelines "
                f"{name}) or set pipeline_settings.{name}.device to cpu."
            )
        return Runtime("cpu")
    index = own.index if own.index is not None else worker.index if worker.index is not None else 0
    if index >= count:
        raise DeviceUnavailableError(
            f"{label} is to run on cuda:{index}, but this worker has {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1})."
        )
    return Runtime(f"cuda:{index}", amp=bool(amp and pipeline.amp))


def runtime_resolver(
    settings: Settings, *, cuda_count: Callable[[], int] = cuda_device_count
) -> Callable[[type[Pipeline]], Runtime]:
    """:func:`resolve_runtime` with the node's settings, for :class:`~node.pipeline.registry.WarmPipelines`."""

    def resolve(pipeline: type[Pipeline]) -> Runtime:
        own = settings.for_pipeline(pipeline.name)
        return resolve_runtime(
            pipeline,
            pipeline_device=own.device,
            worker_device=settings.worker_device,
            amp=own.amp,
            cuda_count=cuda_count,
        )

    return resolve


def claimable_pipelines(registry: PipelineRegistry, settings: Settings) -> list[str] | None:
    """The pipelines whose jobs this worker may claim; ``None``: any job.

    ``worker.pipelines`` (``ai-node worker --pipelines``) restricts the worker; every name must
    be a pipeline of the registry. A worker set to ``cpu`` also leaves out pipelines that need
    CUDA, so a GPU worker and CPU workers can share one queue. A worker on ``auto`` claims them
    and, without a GPU, fails them with a message that says so.
    """
    names = settings.worker.pipelines
    if names is not None:
        for name in names:
            registry.get(name)  # an unknown name is an error listing the known ones
    if settings.worker_device != "cpu":
        return None if names is None else sorted(set(names))
    runnable = []
    for name in registry.names() if names is None else sorted(set(names)):
        if _needs_cuda(registry.get(name), settings.for_pipeline(name).device):
            log.warning("this CPU worker leaves the jobs of pipeline %s to workers with a GPU", name)
            continue
        runnable.append(name)
    return runnable


def _needs_cuda(pipeline: type[Pipeline], pipeline_device: str) -> bool:
    """True when ``pipeline`` cannot run on a CPU worker but could on a GPU worker; a pipeline
    whose settings are wrong either way stays claimable, so that its job fails with the reason."""
    try:
        resolve_runtime(pipeline, pipeline_device=pipeline_device, worker_device="cpu", cuda_count=lambda: 0)
    except DeviceUnavailableError:
        pass
    else:
        return False
    try:
        resolve_runtime(
            pipeline, pipeline_device=pipeline_device, worker_device="auto", cuda_count=lambda: 1024
        )
    except DeviceUnavailableError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

#: pipeline instances whose last run timed out, with the thread still running it
_runaway: weakref.WeakKeyDictionary[Pipeline, threading.Thread] = weakref.WeakKeyDictionary()


def run_pipeline(
    pipeline: Pipeline,
    volume: Volume,
    *,
    time_limit: timedelta | float | None = None,
) -> PipelineResult:
    """Run ``pipeline`` on ``volume``; return its result as masks on ``volume``'s grid.

    The volume goes to the pipeline as its :attr:`~node.pipeline.base.Pipeline.input` asks
    (orientation, spacing, intensity); a label map comes back as one mask per segment; masks
    are mapped back onto the source voxels. ``measurements`` and ``findings`` pass through,
    checked. Anything the pipeline raises, a result that does not fit its declaration, or a
    run longer than ``time_limit`` (seconds or a timedelta; ``None``: no limit) becomes a
    :class:`~node.errors.PipelineError` naming the pipeline; an
    :class:`~node.errors.InputSeriesError` the pipeline raises about its input stays one.
    Exceptions that are not ``Exception``\\ s (a worker being stopped) pass through untouched.
    """
    label = f"Pipeline '{pipeline.name}' {pipeline.version}"
    running = _runaway.get(pipeline)
    if running is not None and running.is_alive():
        raise PipelineError(
            f"{label} is still running a study that ran past its time limit; this worker must "
            "restart before it can run the pipeline again."
        )
    try:
        model_volume, space = to_model_space(volume, pipeline.input)
    except (ValueError, MemoryError) as error:
        raise PipelineError(
            f"{label}: the volume could not be brought onto the pipeline's grid ({pipeline.input}): "
            f"{type(error).__name__}: {error}"
        ) from error
    seconds = time_limit.total_seconds() if isinstance(time_limit, timedelta) else time_limit
    output = _call(pipeline, model_volume, seconds, label)
    if not isinstance(output, PipelineResult):
        raise PipelineError(f"{label} returned {type(output).__name__}, not a PipelineResult.")
    masks = _source_masks(pipeline, output, model_volume, space, label)
    _check_extras(pipeline, output, label)
    return PipelineResult(masks=masks, measurements=output.measurements, findings=output.findings)


def _call(pipeline: Pipeline, volume: Volume, seconds: float | None, label: str) -> PipelineResult:
    if seconds is None:
        return _guarded_run(pipeline, volume, label)
    if not (math.isfinite(seconds) and seconds > 0):
        raise PipelineError(f"{label}: time limit {seconds!r} s is not a positive number of seconds.")
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def target() -> None:
        try:
            outcome["result"] = _guarded_run(pipeline, volume, label)
        except BaseException as error:  # handed to the waiting thread, which re-raises it
            outcome["error"] = error
        finally:
            finished.set()

    thread = threading.Thread(target=target, name=f"pipeline {pipeline.name}", daemon=True)
    thread.start()
    if not finished.wait(seconds):
        _runaway[pipeline] = thread
        raise PipelineTimeoutError(
            f"{label} ran past its time limit of {_duration(seconds)} and was abandoned "
            f"(pipeline_settings.{pipeline.name}.time_limit); the worker restarts to free it."
        )
    if "error" in outcome:
        raise outcome["error"]
    result: PipelineResult = outcome["result"]
    return result


def _guarded_run(pipeline: Pipeline, volume: Volume, label: str) -> PipelineResult:
    try:
        with _torch_modes(pipeline.runtime):
            return pipeline.run(volume)
    except NodeError:
        raise
    except Exception as error:
        if type(error).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
            _release_cuda_cache()
            raise PipelineError(
                f"{label} ran out of GPU memory on {pipeline.runtime.device}: {error}"
            ) from error
        raise PipelineError(f"{label} failed: {type(error).__name__}: {error}") from error


@contextmanager
def _torch_modes(runtime: Runtime) -> Iterator[None]:
    """``torch.inference_mode`` (and autocast on CUDA with ``runtime.amp``) when torch is loaded.

    Both are thread-local, so they are entered in the thread that calls ``run()``. A pipeline
    that never imported torch (rule-based) does not make the node import it.
    """
    torch = sys.modules.get("torch")
    with ExitStack() as stack:
        if torch is not None:
            stack.enter_context(torch.inference_mode())
            if runtime.amp and runtime.is_cuda:
                stack.enter_context(
                    torch.autocast(device_type="cuda", dtype=amp_dtype(torch, runtime.device))
                )
        yield


def amp_dtype(torch: Any, device: str) -> Any:
    """bfloat16 where the GPU computes in it natively (Ampere and later), else float16."""
    index = int(device.partition(":")[2] or 0)
    major, _ = torch.cuda.get_device_capability(index)
    return torch.bfloat16 if major >= 8 else torch.float16


def _release_cuda_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _source_masks(
    pipeline: Pipeline, output: PipelineResult, volume: Volume, space: ModelSpace, label: str
) -> dict[str, np.ndarray]:
    labels = [segment.label for segment in pipeline.segments]
    if output.label_map is not None:
        if output.masks:
            raise PipelineError(f"{label} returned both masks and a label map; return one of them.")
        label_map = np.asarray(output.label_map)
        _check_shape(label_map, volume, f"{label} returned a label map", space)
        if not (np.issubdtype(label_map.dtype, np.integer) or label_map.dtype == np.bool_):
            raise PipelineError(
                f"{label} returned a label map of dtype {label_map.dtype}; it must hold integers "
                f"(0 background, 1 to {len(labels)} its segments)."
            )
        top = int(label_map.max(initial=0))
        if top > len(labels) or int(label_map.min(initial=0)) < 0:
            raise PipelineError(
                f"{label} returned a label map with value {top if top > len(labels) else label_map.min()}; "
                f"it declares {len(labels)} segment(s), so values must be 0 to {len(labels)}."
            )
        source = space.to_source(label_map.astype(np.min_scalar_type(len(labels)), copy=False))
        return {name: source == number for number, name in enumerate(labels, start=1)}
    extra = sorted(set(output.masks) - set(labels))
    if extra:
        raise PipelineError(
            f"{label} returned mask(s) for {extra}, which it does not declare (declared: {labels})."
        )
    missing = [name for name in labels if name not in output.masks]
    if missing:
        raise PipelineError(f"{label} returned no mask for declared segment(s) {missing}.")
    masks = {}
    for name in labels:
        mask = np.asarray(output.masks[name])
        _check_shape(mask, volume, f"{label} returned a mask for segment {name!r}", space)
        masks[name] = space.to_source(mask)
    return masks


def _check_shape(array: np.ndarray, volume: Volume, what: str, space: ModelSpace) -> None:
    if array.shape != volume.shape:
        grid = "the volume it was given" if space.shape == space.source_shape else "its input grid"
        raise PipelineError(f"{what} of shape {array.shape}; {grid} has shape {volume.shape}.")


def _check_extras(pipeline: Pipeline, output: PipelineResult, label: str) -> None:
    labels = {segment.label for segment in pipeline.segments}
    for segment, quantities in output.measurements.items():
        if segment not in labels:
            raise PipelineError(
                f"{label} returned measurements for {segment!r}, which is not one of its segments."
            )
        for quantity in quantities:
            if (
                not isinstance(quantity, Quantity)
                or not _complete(quantity.name)
                or not _complete(quantity.unit)
            ):
                raise PipelineError(
                    f"{label} returned {quantity!r} for segment {segment!r}; a measurement is a "
                    "Quantity with a coded name and a UCUM unit."
                )
            if not math.isfinite(quantity.value):
                raise PipelineError(
                    f"{label} returned {quantity.name.meaning} = {quantity.value} for segment "
                    f"{segment!r}; a measurement must be a finite number."
                )
    for finding in output.findings:
        if not isinstance(finding, Finding) or not _complete(finding.name) or not _complete(finding.value):
            raise PipelineError(
                f"{label} returned {finding!r}; a finding is a Finding with a coded name and value."
            )
        if finding.segment is not None and finding.segment not in labels:
            raise PipelineError(
                f"{label} returned a finding for {finding.segment!r}, which is not one of its segments."
            )


def _complete(code: object) -> bool:
    return isinstance(code, Code) and bool(code.value and code.scheme and code.meaning)


def _duration(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def check_input_series(
    pipeline: type[Pipeline], *, body_part: str | None, slice_thickness_mm: float | None
) -> None:
    """Raise :class:`InputSeriesError` when a series' body part or slice thickness is not what
    ``pipeline`` accepts (:meth:`~node.pipeline.base.SeriesCriteria.unmet_details`)."""
    reasons = pipeline.accepts.unmet_details(body_part=body_part, slice_thickness_mm=slice_thickness_mm)
    if reasons:
        raise InputSeriesError(
            f"Pipeline '{pipeline.name}' does not accept this series: {'; '.join(reasons)}."
        )


def exit_worker(status: int = EXIT_PIPELINE_TIMEOUT) -> NoReturn:
    """End this worker process now, after flushing the logs.

    For a pipeline that ran past its time limit: its thread cannot be stopped and may hold the
    GPU or every CPU core, so the process ends without waiting for it (``os._exit``) and the
    supervisor starts a fresh worker, which loads its pipelines again.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def describe_runtime(runtime: Runtime) -> str:
    """``cuda:0 (bfloat16 autocast)`` / ``cpu``: how logs and the CLI name a runtime."""
    return f"{runtime.device}{' with autocast' if runtime.amp else ''}"


__all__: Sequence[str] = (
    "EXIT_PIPELINE_TIMEOUT",
    "DeviceRequest",
    "DeviceUnavailableError",
    "PipelineTimeoutError",
    "check_input_series",
    "claimable_pipelines",
    "cuda_device_count",
    "describe_runtime",
    "exit_worker",
    "resolve_runtime",
    "run_pipeline",
    "runtime_resolver",
)
