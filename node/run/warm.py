"""A worker's pipelines, loaded once and kept warm."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from node.errors import NodeError, PipelineError
from node.pipeline.base import Pipeline, Runtime
from node.pipeline.registry import PipelineRegistry
from node.run.device import resolve_runtime


class WarmPipelines:
    """A worker's pipelines, each instantiated and loaded the first time it is asked for.

    Weights stay in memory for the life of the worker. A pipeline whose :meth:`load` fails is
    not kept, so the next :meth:`get` tries again.
    """

    def __init__(
        self,
        registry: PipelineRegistry,
        *,
        runtime: Callable[[type[Pipeline]], Runtime] | None = None,
    ) -> None:
        """``runtime`` picks each pipeline's device (:func:`node.run.device.runtime_resolver`);
        default: CUDA when the pipeline can use it and a GPU is present, else the CPU."""
        self._registry = registry
        self._runtime = runtime
        self._instances: dict[str, Pipeline] = {}
        self._load_seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Pipeline:
        """The loaded instance of pipeline ``name``, loading it now if this is the first use.

        A pipeline that needs a device this worker lacks raises
        :class:`~node.run.device.DeviceUnavailableError` (a :class:`PipelineError`).
        """
        with self._lock:
            if name not in self._instances:
                cls = self._registry.get(name)
                runtime = self._resolve(cls)
                started = time.perf_counter()
                try:
                    instance = cls()
                    instance.runtime = runtime
                    instance.load()
                except NodeError:
                    raise
                except Exception as exc:
                    raise PipelineError(
                        f"Pipeline '{name}' {cls.version} failed to load on {runtime.device}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                self._load_seconds[name] = time.perf_counter() - started
                self._instances[name] = instance
            return self._instances[name]

    def _resolve(self, cls: type[Pipeline]) -> Runtime:
        if self._runtime is not None:
            return self._runtime(cls)
        return resolve_runtime(cls)

    def is_warm(self, name: str) -> bool:
        return name in self._instances

    def loaded(self) -> list[str]:
        """The pipelines loaded so far, by name."""
        return sorted(self._instances)

    def load_seconds(self, name: str) -> float | None:
        """Seconds that instantiating and loading ``name`` took; ``None`` if not loaded yet."""
        return self._load_seconds.get(name)
