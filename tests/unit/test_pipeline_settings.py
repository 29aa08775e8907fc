"""The configuration of pipelines: models:, pipeline_settings, worker_device, and the registry."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from node.config import MonaiBundleSettings, Settings, TorchScriptModelSettings, load_settings
from node.errors import ConfigurationError, PipelineError
from node.pipeline.registry import PipelineRegistry

DIST = Path(__file__).resolve().parents[1] / "fixtures" / "entry_point_dist"

EXAMPLE = """
pipelines: [ct-tissue, spleen-ct, bone-ts]
worker_device: cpu
models:
  - type: monai-bundle
    name: spleen-ct
    path: /srv/models/spleen_ct_segmentation
  - type: torchscript
    name: bone-ts
    descriptor: /srv/models/bone/bone.yaml
pipeline_settings:
  spleen-ct:
    device: cuda:1
    amp: false
    time_limit: 600
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    return path


def test_the_documented_example_reads_into_typed_settings(tmp_path):
    settings = load_settings(write(tmp_path, EXAMPLE))

    bundle, script = settings.models
    assert isinstance(bundle, MonaiBundleSettings) and bundle.path == Path(
        "/srv/models/spleen_ct_segmentation"
    )
    assert isinstance(script, TorchScriptModelSettings) and script.weights is None
    assert settings.worker_device == "cpu"
    spleen = settings.for_pipeline("spleen-ct")
    assert (spleen.device, spleen.amp, spleen.time_limit) == ("cuda:1", False, timedelta(minutes=10))


def test_pipeline_defaults_follow_the_worker_with_amp_and_a_half_hour_limit():
    defaults = Settings().for_pipeline("anything")

    assert (defaults.device, defaults.amp, defaults.time_limit) == ("auto", True, timedelta(minutes=30))
    assert Settings().worker_device == "auto"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "models: [{type: onnx, name: a, path: /x}]",
            "models.0: Input tag 'onnx' found using 'type' does not match",
        ),
        (
            "models: [{type: torchscript, name: a, descriptor: /x, colour: red}]",
            "models.0.torchscript.colour: Extra inputs",
        ),
        (
            "models: [{type: monai-bundle, name: Spleen CT, path: /x}]",
            "models.0.monai-bundle.name: String should match",
        ),
        ("pipeline_settings: {a: {device: gpu}}", "pipeline_settings.a.device: String should match"),
        ("pipeline_settings: {a: {time_limit: soon}}", "pipeline_settings.a.time_limit"),
    ],
)
def test_bad_model_and_pipeline_settings_are_refused_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigurationError, match=message):
        load_settings(write(tmp_path, text))


def settings(**data: object) -> Settings:
    return Settings.model_validate(data)


def test_enabled_names_select_among_entry_points_and_models(monkeypatch):
    monkeypatch.syspath_prepend(str(DIST))

    registry = PipelineRegistry.from_settings(settings(pipelines=["ct-tissue", "example-bone"]))

    assert registry.names() == ["ct-tissue", "example-bone"]
    assert "distribution 'ai-node-example-pipelines 0.1.0'" in registry.origin("example-bone")


def test_a_disabled_model_is_not_even_read():
    missing = {"type": "torchscript", "name": "bone-ts", "descriptor": "/nonexistent/bone.yaml"}

    registry = PipelineRegistry.from_settings(settings(pipelines=["ct-tissue"], models=[missing]))

    assert registry.names() == ["ct-tissue"]


def test_an_enabled_model_whose_descriptor_is_missing_stops_the_registry_with_its_path():
    missing = {"type": "torchscript", "name": "bone-ts", "descriptor": "/nonexistent/bone.yaml"}

    with pytest.raises(PipelineError, match="The descriptor /nonexistent/bone.yaml cannot be read"):
        PipelineRegistry.from_settings(settings(pipelines=["bone-ts"], models=[missing]))


def test_a_model_named_like_an_installed_pipeline_is_refused():
    clash = {"type": "torchscript", "name": "ct-tissue", "descriptor": "/x.yaml"}

    with pytest.raises(
        PipelineError, match=r"'ct-tissue' are both an installed entry point .* and an entry of models:"
    ):
        PipelineRegistry.from_settings(settings(models=[clash]))


def test_two_models_of_one_name_are_refused():
    model = {"type": "torchscript", "name": "bone-ts", "descriptor": "/x.yaml"}

    with pytest.raises(PipelineError, match="Two entries of models: are named 'bone-ts'"):
        PipelineRegistry.from_settings(settings(models=[model, model]))


def test_an_enabled_name_found_nowhere_is_an_error_listing_what_there_is():
    with pytest.raises(
        PipelineError, match="'lung-nodules' are neither installed nor configured under models:"
    ):
        PipelineRegistry.from_settings(settings(pipelines=["ct-tissue", "lung-nodules"]))


def test_settings_with_models_and_time_limits_dump_and_reload_unchanged(tmp_path):
    original = load_settings(write(tmp_path, EXAMPLE))
    dumped = yaml.safe_load(yaml.safe_dump(original.model_dump(mode="json")))

    assert Settings.model_validate(dumped) == original
