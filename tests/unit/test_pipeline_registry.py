"""Pipeline registration through entry points, its checks, and the worker's warm cache."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint
from typing import ClassVar

import numpy as np
import pytest

from node.errors import PipelineError
from node.pipeline.base import (
    Code,
    Measurement,
    Pipeline,
    PipelineResult,
    SegmentSpec,
    SeriesCriteria,
)
from node.pipeline.registry import ENTRY_POINT_GROUP, PipelineRegistry
from node.run.warm import WarmPipelines
from pipelines.brain_extraction import BrainExtraction
from pipelines.ct_tissue import CtTissueSegmentation

TISSUE = Code("85756007", "SCT", "Tissue")
MUSCLE = Code("91727004", "SCT", "Muscle")


class Thresholder(Pipeline):
    name = "thresholder"
    version = "0.1.0"
    description = "A test pipeline."
    accepts = SeriesCriteria(modalities=frozenset({"CT"}))
    segments = (SegmentSpec("Muscle", TISSUE, MUSCLE, (192, 104, 88)),)
    loads: ClassVar[int] = 0

    def load(self) -> None:
        type(self).loads += 1

    def run(self, volume):
        return PipelineResult(masks={"Muscle": volume.array > 0})


class OtherThresholder(Thresholder):
    """A second class claiming the same name."""


class NoAccepts(Pipeline):
    name = "no-accepts"
    version = "1"
    description = ""
    segments = Thresholder.segments

    def run(self, volume):
        return PipelineResult()


class TwoMuscles(Thresholder):
    name = "two-muscles"
    segments = Thresholder.segments * 2


class NoRun(Pipeline):
    name = "no-run"
    version = "1"
    description = ""
    accepts = Thresholder.accepts
    segments = Thresholder.segments


class FailsToLoad(Thresholder):
    name = "fails-to-load"

    def load(self) -> None:
        raise OSError("weights.pt: no such file")


def entry_point(name: str, target: str) -> EntryPoint:
    return EntryPoint(name=name, value=f"{__name__}:{target}", group=ENTRY_POINT_GROUP)


def test_installed_entry_points_give_the_built_in_pipelines():
    registry = PipelineRegistry.from_entry_points()

    assert registry.get("ct-tissue") is CtTissueSegmentation
    assert registry.get("brain-extraction") is BrainExtraction


def test_only_enabled_pipelines_are_loaded():
    registry = PipelineRegistry.from_entry_points(enabled={"ct-tissue"})

    assert registry.names() == ["ct-tissue"]


def test_enabling_a_pipeline_that_is_not_installed_is_an_error():
    with pytest.raises(PipelineError, match="'lung-nodules' are not installed"):
        PipelineRegistry.from_entry_points(enabled={"ct-tissue", "lung-nodules"})


def test_registry_iterates_over_pipeline_classes_by_name():
    registry = PipelineRegistry([Thresholder, CtTissueSegmentation])

    assert list(registry) == [CtTissueSegmentation, Thresholder]


def test_two_entry_points_with_one_name_are_rejected():
    points = [
        entry_point("thresholder", "Thresholder"),
        entry_point("thresholder", "Thresholder"),
    ]

    with pytest.raises(PipelineError, match="'thresholder' is registered twice"):
        PipelineRegistry.from_entry_point_list(points)


def test_two_classes_with_one_name_are_rejected():
    with pytest.raises(PipelineError, match="Two pipelines are named 'thresholder'"):
        PipelineRegistry([Thresholder, OtherThresholder])


def test_entry_point_name_must_be_the_pipeline_name():
    with pytest.raises(PipelineError, match="whose name is 'thresholder'; the two must be equal"):
        PipelineRegistry.from_entry_point_list([entry_point("muscles", "Thresholder")])


def test_entry_point_that_fails_to_import_is_named_in_the_error():
    point = EntryPoint(name="broken", value="no_such_module:Model", group=ENTRY_POINT_GROUP)

    with pytest.raises(
        PipelineError,
        match=r"'broken = no_such_module:Model' of an unknown distribution could not be "
        r"imported: ModuleNotFoundError",
    ):
        PipelineRegistry.from_entry_point_list([point])


def test_entry_point_to_something_other_than_a_pipeline_is_rejected():
    with pytest.raises(PipelineError, match="is not a subclass of node.pipeline.base.Pipeline"):
        PipelineRegistry.from_entry_point_list([entry_point("dice", "dice_score")])


def test_class_missing_accepts_is_rejected():
    with pytest.raises(PipelineError, match="'no-accepts' .* has accepts None"):
        PipelineRegistry([NoAccepts])


def test_class_with_a_duplicate_segment_label_is_rejected():
    with pytest.raises(PipelineError, match="segment label\\(s\\) 'Muscle' more than once"):
        PipelineRegistry([TwoMuscles])


def test_class_without_run_is_rejected():
    with pytest.raises(PipelineError, match="'no-run' .* does not implement run"):
        PipelineRegistry([NoRun])


def test_unknown_name_lists_the_known_pipelines():
    registry = PipelineRegistry([Thresholder, CtTissueSegmentation])

    with pytest.raises(PipelineError, match="known pipelines: 'ct-tissue', 'thresholder'"):
        registry.get("lung-nodules")


def test_description_is_json_with_codes_colours_and_measurements():
    registry = PipelineRegistry([CtTissueSegmentation])

    described = json.loads(json.dumps(registry.describe("ct-tissue")))

    assert described["accepts"] == {
        "modalities": ["CT"],
        "min_slices": 10,
        "orientation": "axial",
        "body_parts": [],
        "slice_thickness_mm": None,
    }
    assert described["input"] == {"orientation": None, "spacing": None, "intensity": None}
    assert described["devices"] == ["cpu"]
    assert described["model_checksum"] is None
    assert described["segments"][1] == {
        "label": "Bone",
        "category": {"value": "85756007", "scheme": "SCT", "meaning": "Tissue"},
        "type": {"value": "3138006", "scheme": "SCT", "meaning": "Bone"},
        "rgb": [241, 214, 145],
        "measurements": [Measurement.VOLUME.value, Measurement.MEAN_INTENSITY.value],
        "description": "Body voxels at or above 226 HU",
    }


def test_warm_pipelines_load_a_pipeline_once():
    warm = WarmPipelines(PipelineRegistry([Thresholder]))
    Thresholder.loads = 0

    first = warm.get("thresholder")
    second = warm.get("thresholder")

    assert first is second
    assert Thresholder.loads == 1
    assert warm.is_warm("thresholder")
    assert warm.load_seconds("thresholder") >= 0


def test_warm_pipelines_report_a_failed_load_and_keep_nothing():
    warm = WarmPipelines(PipelineRegistry([FailsToLoad]))

    with pytest.raises(PipelineError, match="'fails-to-load' 0.1.0 failed to load on cpu: OSError"):
        warm.get("fails-to-load")
    assert not warm.is_warm("fails-to-load")


def dice_score(a: np.ndarray, b: np.ndarray) -> float:
    """Not a pipeline: the target of a misdirected entry point."""
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())
