"""Running a pipeline on a volume inside a worker: errors become the job's words."""

from __future__ import annotations

from node.errors import NodeError, PipelineError
from node.imaging.volume import Volume
from pipelines.base import Pipeline, PipelineResult


def run_pipeline(pipeline: Pipeline, volume: Volume) -> PipelineResult:
    """Run ``pipeline``; anything it raises becomes a PipelineError that names it.

    Exceptions that are not the node's (BaseException subclasses used to stop a worker, for
    example) pass through untouched.
    """
    try:
        return pipeline.run(volume)
    except NodeError:
        raise
    except Exception as error:
        raise PipelineError(
            f"pipeline {pipeline.name} {pipeline.version} failed: {type(error).__name__}: {error}"
        ) from error
