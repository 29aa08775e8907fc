"""A MONAI bundle folder (Model Zoo layout) registered from the configuration and run warm.

The bundle is written by the test: a real MONAI U-Net trained for a few steps on the sample
CT, its inference.json with the usual preprocessing (LoadImaged, Orientationd, Spacingd,
ScaleIntensityRanged), sliding-window inferer and postprocessing (Invertd, AsDiscreted,
SaveImaged).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
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
    network,
    read_series,
    slab,
    trained_bone_state,
    write_monai_bundle,
)
from tests.requirements import sample_series


@pytest.fixture(scope="module")
def ct_folder() -> Path:
    return sample_series("ct")


@pytest.fixture(scope="module")
def ct(ct_folder) -> Volume:
    return read_series(ct_folder)


@pytest.fixture(scope="module")
def bundle(ct_folder, tmp_path_factory) -> Path:
    return write_monai_bundle(tmp_path_factory.mktemp("bundle") / "bone_ct", trained_bone_state(ct_folder))


def settings_for(bundle: Path, **model: object) -> Settings:
    return Settings.model_validate(
        {
            "pipelines": ["ct-bone-bundle"],
            "models": [{"type": "monai-bundle", "name": "ct-bone-bundle", "path": str(bundle), **model}],
        }
    )


@pytest.fixture(scope="module")
def warm(bundle) -> WarmPipelines:
    return WarmPipelines(PipelineRegistry.from_settings(settings_for(bundle)))


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def test_the_bundle_is_registered_with_its_version_labels_and_checksum(bundle):
    registry = PipelineRegistry.from_settings(settings_for(bundle))
    cls = registry.get("ct-bone-bundle")

    assert cls.version == f"0.1.0+sha256.{cls.model_checksum()[7:19]}"  # metadata.json's version
    assert cls.description == "Bone on CT by a tiny MONAI bundle (test model)"
    assert [segment.label for segment in cls.segments] == ["bone"]  # metadata.json channel_def
    assert str(bundle) in registry.origin("ct-bone-bundle")


def test_the_bundle_finds_bone_on_the_sample_ct_on_the_series_grid(warm, ct, bundle):
    pipeline = warm.get("ct-bone-bundle")
    result = run_pipeline(pipeline, ct)

    bone = segment_mask(result, pipeline.segments, "bone")
    assert bone.shape == ct.shape
    assert dice(bone, ct.array >= BONE_HU) > 0.7
    assert not (bundle / "eval").exists()  # SaveImaged was left out: nothing written


def test_the_network_is_loaded_once_and_stays_warm(warm, ct):
    pipeline = warm.get("ct-bone-bundle")
    network_object = pipeline._network

    run_pipeline(warm.get("ct-bone-bundle"), slab(ct, 30, 60))

    assert warm.get("ct-bone-bundle") is pipeline
    assert pipeline._network is network_object


def test_a_torchscript_export_in_models_is_used_when_there_is_no_state_dict(bundle, tmp_path, ct, ct_folder):
    copy = copy_of(bundle, tmp_path)
    model = network()
    model.load_state_dict(trained_bone_state(ct_folder))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13 deprecates TorchScript, and tracing warns
        scripted = torch.jit.trace(model.eval(), torch.zeros(1, 1, 48, 48, 48))
        torch.jit.save(scripted, str(copy / "models" / "model.ts"))
    (copy / "models" / "model.pt").unlink()
    pipeline = WarmPipelines(PipelineRegistry.from_settings(settings_for(copy))).get("ct-bone-bundle")

    result = run_pipeline(pipeline, ct)

    assert dice(segment_mask(result, pipeline.segments, "bone"), ct.array >= BONE_HU) > 0.7


def test_a_folder_without_metadata_is_not_a_bundle(tmp_path):
    with pytest.raises(PipelineError, match="is not a MONAI bundle: it has no configs/metadata.json"):
        PipelineRegistry.from_settings(settings_for(tmp_path))


def test_missing_weights_are_not_downloaded_but_named(bundle, tmp_path):
    copy = copy_of(bundle, tmp_path)
    (copy / "models" / "model.pt").unlink()

    with pytest.raises(
        PipelineError, match="has neither models/model.pt nor models/model.ts; nothing is downloaded"
    ):
        PipelineRegistry.from_settings(settings_for(copy))


def test_a_label_value_the_bundle_does_not_define_is_refused(bundle, tmp_path):
    copy = copy_of(bundle, tmp_path)
    descriptor = copy / "configs" / "ai-node.yaml"
    data = yaml.safe_load(descriptor.read_text())
    data["segments"][0]["index"] = 7
    descriptor.write_text(yaml.safe_dump(data))

    with pytest.raises(
        PipelineError, match=r"maps label value 7, which the bundle's metadata.json does not define"
    ):
        PipelineRegistry.from_settings(settings_for(copy))


def test_weights_that_do_not_fit_the_network_fail_the_load_by_name(bundle, tmp_path):
    copy = copy_of(bundle, tmp_path)
    inference = json.loads((copy / "configs" / "inference.json").read_text())
    inference["network_def"]["channels"] = [4, 8]
    (copy / "configs" / "inference.json").write_text(json.dumps(inference))
    warm = WarmPipelines(PipelineRegistry.from_settings(settings_for(copy)))

    with pytest.raises(
        PipelineError, match=r"'ct-bone-bundle': the weights .*model.pt do not fit the bundle's network_def"
    ):
        warm.get("ct-bone-bundle")
