"""A TorchScript file plus a descriptor, registered from the configuration and run warm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from node.config import Settings
from node.errors import PipelineError
from node.imaging.volume import Volume
from node.pipeline.registry import PipelineRegistry
from node.run.execution import run_pipeline
from node.run.warm import WarmPipelines
from tests.factories import segment_mask
from tests.fixtures.models import (
    BONE_HU,
    dice,
    read_series,
    trained_bone_state,
    write_torchscript_model,
)
from tests.requirements import sample_series


@pytest.fixture(scope="module")
def ct_folder() -> Path:
    return sample_series("ct")


@pytest.fixture(scope="module")
def ct(ct_folder) -> Volume:
    return read_series(ct_folder)


@pytest.fixture(scope="module")
def descriptor(ct_folder, tmp_path_factory) -> Path:
    return write_torchscript_model(tmp_path_factory.mktemp("ts"), trained_bone_state(ct_folder))


def settings_for(descriptor: Path, **model: object) -> Settings:
    return Settings.model_validate(
        {
            "pipelines": ["ct-bone-ts"],
            "models": [{"type": "torchscript", "name": "ct-bone-ts", "descriptor": str(descriptor), **model}],
        }
    )


@pytest.fixture(scope="module")
def registry(descriptor) -> PipelineRegistry:
    return PipelineRegistry.from_settings(settings_for(descriptor))


@pytest.fixture(scope="module")
def warm(registry) -> WarmPipelines:
    return WarmPipelines(registry)


def edited(descriptor: Path, tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load(descriptor.read_text())
    data.update(changes)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(data))
    (tmp_path / "bone.ts").write_bytes((descriptor.parent / "bone.ts").read_bytes())
    return path


def test_the_model_is_registered_with_its_descriptor_and_weights_checksum(registry, descriptor):
    cls = registry.get("ct-bone-ts")
    described = registry.describe("ct-bone-ts")

    assert cls.model_checksum().startswith("sha256:")
    assert cls.version == f"0.1.0+sha256.{cls.model_checksum()[7:19]}"
    assert described["input"] == {
        "orientation": "RAS",
        "spacing": [3.0, 3.0, 3.0],
        "intensity": {"type": "window", "lower": -1000.0, "upper": 2000.0, "out_min": 0.0, "out_max": 1.0},
    }
    assert [s["label"] for s in described["segments"]] == ["Bone"]
    assert str(descriptor) in registry.origin("ct-bone-ts")


def test_the_model_finds_bone_on_the_sample_ct_on_the_series_grid(warm, ct):
    pipeline = warm.get("ct-bone-ts")
    result = run_pipeline(pipeline, ct)

    bone = segment_mask(result, pipeline.segments, "Bone")
    assert bone.shape == ct.shape
    assert dice(bone, ct.array >= BONE_HU) > 0.7


def test_the_module_is_loaded_once_and_stays_warm(warm, ct):
    pipeline = warm.get("ct-bone-ts")
    module = pipeline._model

    run_pipeline(warm.get("ct-bone-ts"), ct)

    assert warm.get("ct-bone-ts") is pipeline
    assert pipeline._model is module
    assert warm.load_seconds("ct-bone-ts") is not None


def test_new_weights_under_the_same_version_make_a_new_pipeline_version(descriptor, tmp_path):
    copy = edited(descriptor, tmp_path)
    (tmp_path / "bone.ts").write_bytes((tmp_path / "bone.ts").read_bytes() + b"\0")

    changed = PipelineRegistry.from_settings(settings_for(copy)).get("ct-bone-ts")

    assert (
        changed.version != PipelineRegistry.from_settings(settings_for(descriptor)).get("ct-bone-ts").version
    )


def test_an_unknown_descriptor_key_is_rejected_by_name(descriptor, tmp_path):
    copy = edited(descriptor, tmp_path, colour="blue")

    with pytest.raises(PipelineError, match=r"descriptor .*edited.yaml is invalid: colour: Extra inputs"):
        PipelineRegistry.from_settings(settings_for(copy))


def test_the_descriptor_must_name_the_configured_pipeline(descriptor, tmp_path):
    copy = edited(descriptor, tmp_path, name="other-model")

    with pytest.raises(PipelineError, match="names the pipeline 'other-model'; the configuration's name"):
        PipelineRegistry.from_settings(settings_for(copy))


def test_missing_weights_are_named(descriptor, tmp_path):
    with pytest.raises(PipelineError, match=r"the TorchScript file .*missing.ts does not exist"):
        PipelineRegistry.from_settings(settings_for(descriptor, weights=str(tmp_path / "missing.ts")))


def test_a_segment_on_a_channel_the_model_lacks_fails_the_run_by_name(descriptor, tmp_path, ct):
    data = yaml.safe_load(descriptor.read_text())
    data["segments"][0]["index"] = 5
    copy = edited(descriptor, tmp_path, segments=data["segments"])
    pipeline = WarmPipelines(PipelineRegistry.from_settings(settings_for(copy))).get("ct-bone-ts")

    with pytest.raises(
        PipelineError, match=r"'ct-bone-ts': the model returned 2 channel\(s\), but its descriptor"
    ):
        run_pipeline(pipeline, ct)


def test_sigmoid_outputs_become_one_mask_per_channel(descriptor, tmp_path, ct):
    data = yaml.safe_load(descriptor.read_text())
    inference = {**data["inference"], "activation": "sigmoid"}
    copy = edited(descriptor, tmp_path, inference=inference)
    pipeline = WarmPipelines(PipelineRegistry.from_settings(settings_for(copy))).get("ct-bone-ts")

    result = run_pipeline(pipeline, ct)

    assert result.masks["Bone"].dtype == np.bool_
    assert result.masks["Bone"].shape == ct.shape


def _labels_model(descriptor: Path, tmp_path: Path) -> Path:
    """The same network as a TorchScript file that returns each voxel's label itself."""
    import torch

    class Labels(torch.nn.Module):
        def __init__(self, scores: torch.nn.Module) -> None:
            super().__init__()
            self.scores = scores

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.scores(image).argmax(dim=1, keepdim=True)

    scores = torch.jit.load(str(descriptor.parent / "bone.ts"))
    path = tmp_path / "labels.ts"
    torch.jit.save(torch.jit.script(Labels(scores)), str(path))
    return path


def test_a_model_that_returns_labels_gives_the_label_map_its_scores_would(descriptor, tmp_path, ct):
    data = yaml.safe_load(descriptor.read_text())
    labels_file = _labels_model(descriptor, tmp_path)
    edge_to_edge = {**data["inference"], "overlap": 0.0}
    (tmp_path / "scores").mkdir()
    (tmp_path / "labels").mkdir()
    by_scores = edited(descriptor, tmp_path / "scores", inference=edge_to_edge)
    by_labels = edited(
        descriptor,
        tmp_path / "labels",
        inference={**edge_to_edge, "activation": "labels"},
        model=str(labels_file),
    )
    scores_pipeline = WarmPipelines(PipelineRegistry.from_settings(settings_for(by_scores))).get("ct-bone-ts")
    labels_pipeline = WarmPipelines(PipelineRegistry.from_settings(settings_for(by_labels))).get("ct-bone-ts")

    from_scores = run_pipeline(scores_pipeline, ct)
    from_labels = run_pipeline(labels_pipeline, ct)

    # without overlap, each voxel's label comes from one window either way (the last window of
    # an axis, moved back to fit, decides where two cover a voxel: MONAI averages the scores)
    agreement = np.mean(from_labels.label_map == from_scores.label_map)
    assert from_labels.label_map.dtype == np.uint8 and agreement > 0.99
    assert dice(segment_mask(from_labels, labels_pipeline.segments, "Bone"), ct.array >= BONE_HU) > 0.7


def test_labels_with_overlapping_windows_are_refused_when_the_descriptor_is_read(descriptor, tmp_path):
    data = yaml.safe_load(descriptor.read_text())
    copy = edited(
        descriptor, tmp_path, inference={**data["inference"], "activation": "labels", "overlap": 0.25}
    )

    with pytest.raises(PipelineError, match="labels cannot be blended where windows overlap"):
        PipelineRegistry.from_settings(settings_for(copy))
