"""Where a pipeline runs: the device each pipeline gets on this worker, and which jobs a
worker may claim.

:func:`resolve_runtime` picks the device for a pipeline from its declaration, its settings and
the worker's; :func:`claimable_pipelines` tells a worker which jobs it may claim, so a GPU
worker and CPU workers can share one queue.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from node.config import Settings
from node.errors import PipelineError
from node.pipeline.base import DeviceKind, Pipeline, Runtime
from node.pipeline.registry import PipelineRegistry

log = logging.getLogger(__name__)

_DEVICE_SETTING = re.compile(r"auto|cpu|cuda(?::\d+)?")


class DeviceUnavailableError(PipelineError):
    """A pipeline needs a device this worker does not have (CUDA, usually)."""


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
    """:func:`resolve_runtime` with the node's settings, for :class:`~node.run.warm.WarmPipelines`."""

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


def describe_runtime(runtime: Runtime) -> str:
    """``cuda:0 (bfloat16 autocast)`` / ``cpu``: how logs and the CLI name a runtime."""
    return f"{runtime.device}{' with autocast' if runtime.amp else ''}"
