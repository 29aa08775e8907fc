"""Running a pipeline on a volume inside a worker (or ``ai-node pipelines run``).

:func:`run_pipeline` is the one way a pipeline runs: it brings the volume onto the grid the
pipeline asks for (:mod:`node.run.resample`), calls ``run()`` in a thread with a deadline, under
``torch.inference_mode`` and, on CUDA where allowed, ``torch.autocast``; checks what came back;
and maps it onto the source voxels. Whatever goes wrong becomes a :class:`PipelineError` that
names the pipeline, so it fails only its own job.

A thread cannot be killed. When a pipeline exceeds its time limit the job fails with
:class:`PipelineTimeoutError`, and the worker then ends its process (:func:`exit_worker`) so
that the supervisor starts a fresh one: the runaway thread still holds the model, the CPU or
the GPU, and only the end of the process frees them.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any, NoReturn

import numpy as np

from node.errors import InputSeriesError, NodeError, PipelineError
from node.imaging.volume import Volume
from node.pipeline.base import (
    Code,
    Finding,
    Pipeline,
    PipelineResult,
    Quantity,
    Runtime,
)
from node.run.resample import ModelSpace, to_model_space

log = logging.getLogger(__name__)

#: exit status of a worker that ended itself after a pipeline ran past its time limit
#: (EX_TEMPFAIL of sysexits.h: try again, with a fresh process)
EXIT_PIPELINE_TIMEOUT = 75


class PipelineTimeoutError(PipelineError):
    """A pipeline ran past its time limit; its thread may still be running."""


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
    """Run ``pipeline`` on ``volume``; return its result on ``volume``'s grid.

    The volume goes to the pipeline as its :attr:`~node.pipeline.base.Pipeline.input` asks
    (orientation, spacing, intensity); its label map or masks are mapped back onto the source
    voxels, a label map as a label map (one mask per segment would be a hundred times its size
    for a whole-body model). ``measurements`` and ``findings`` pass through,
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
    on_source = _on_source_grid(pipeline, output, model_volume, space, label)
    _check_extras(pipeline, output, label)
    return on_source


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
    except MemoryError as error:
        # numpy or torch could not allocate on the host: the series is too large for this worker
        # as it is configured, which an admin can act on; no retry on the same worker would help
        raise PipelineError(
            f"{label} ran out of memory on a volume of {' x '.join(map(str, volume.shape))} voxels "
            f"({volume.array.nbytes / 2**20:.0f} MiB as the pipeline receives it): give the worker "
            "more memory, or leave series this large to another node (a rule on the number of slices)"
        ) from error
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


def _on_source_grid(
    pipeline: Pipeline, output: PipelineResult, volume: Volume, space: ModelSpace, label: str
) -> PipelineResult:
    """``output`` checked and mapped onto the source grid: a label map stays one label map
    (in the smallest integer type its segments fit), masks stay masks."""
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
        return replace(
            output, label_map=space.to_source(label_map.astype(np.min_scalar_type(len(labels)), copy=False))
        )
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
    return replace(output, masks=masks)


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


__all__: Sequence[str] = (
    "EXIT_PIPELINE_TIMEOUT",
    "PipelineTimeoutError",
    "check_input_series",
    "exit_worker",
    "run_pipeline",
)
