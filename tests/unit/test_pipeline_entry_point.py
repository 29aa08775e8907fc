"""A pipeline from a separately installed distribution, found through its entry point.

``tests/fixtures/entry_point_dist`` is laid out as pip leaves an installed distribution in
site-packages (a package and its ``*.dist-info`` with ``entry_points.txt``); putting it on
``sys.path`` makes ``importlib.metadata`` see it, without installing into the environment.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from node.errors import PipelineError
from node.imaging.series import build_volume
from node.pipeline.registry import ENTRY_POINT_GROUP, PipelineRegistry
from node.pipeline.voxels import SegmentVoxels
from node.results.measure import measure_segments
from node.run.execution import run_pipeline
from node.run.warm import WarmPipelines
from tests.factories import make_series

DIST = Path(__file__).resolve().parents[1] / "fixtures" / "entry_point_dist"
ROOT = Path(__file__).resolve().parents[2]
#: the shipped models and the contract they are written against (node/pipeline/)
PIPELINE_MODULES = sorted([*(ROOT / "pipelines").glob("*.py"), *(ROOT / "node" / "pipeline").glob("*.py")])


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(DIST))


def test_the_distribution_s_pipelines_join_the_built_in_ones(installed):
    registry = PipelineRegistry.from_entry_points(group=ENTRY_POINT_GROUP)

    assert registry.names() == [
        "brain-extraction",
        "ct-tissue",
        "example-bone",
        "example-broken",
        "example-slow",
    ]
    assert registry.origin("example-bone") == (
        "entry point ai_node_example_pipelines:ExampleBone of distribution 'ai-node-example-pipelines 0.1.0'"
    )


def test_without_the_distribution_on_the_path_its_pipelines_are_gone():
    assert "example-bone" not in PipelineRegistry.from_entry_points().names()


def test_its_pipeline_runs_on_its_own_grid_and_the_node_measures_the_result_on_the_series(installed):
    stored = np.zeros((10, 48, 48), dtype=np.int16)  # -1024 HU
    stored[3:7, 12:36, 12:36] = 1024 + 700  # a 12 × 21.6 × 21.6 mm block of bone
    source = build_volume(make_series(stored, spacing=(3.0, 0.9, 0.9)))
    pipeline = WarmPipelines(PipelineRegistry.from_entry_points(enabled={"example-bone"})).get("example-bone")

    result = run_pipeline(pipeline, source)
    (bone,) = measure_segments(
        source, pipeline.segments, SegmentVoxels.from_result(source.shape, pipeline.segments, result)
    )

    assert bone.volume_ml == pytest.approx(12 * 21.6 * 21.6 / 1000, rel=0.01)
    assert bone.mean_intensity == pytest.approx(700.0)
    assert result.measurements["Bone"][0].unit.value == "ml"


def test_its_broken_pipeline_fails_with_a_message_that_names_it(installed):
    pipeline = WarmPipelines(PipelineRegistry.from_entry_points(enabled={"example-broken"})).get(
        "example-broken"
    )
    volume = build_volume(make_series(np.zeros((3, 8, 8), dtype=np.int16)))

    with pytest.raises(PipelineError, match=r"Pipeline 'example-broken' 0.0.1 failed: ZeroDivisionError"):
        run_pipeline(pipeline, volume)


@pytest.mark.parametrize("path", PIPELINE_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pipeline_module_imports_pydicom_or_highdicom(path):
    imported = set()
    for statement in ast.walk(ast.parse(path.read_text())):
        if isinstance(statement, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in statement.names}
        elif isinstance(statement, ast.ImportFrom) and statement.module:
            imported.add(statement.module.split(".")[0])

    assert not imported & {"pydicom", "highdicom"}
