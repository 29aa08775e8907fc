"""The node keeps its promises when things go wrong: restarts, broken studies, killed workers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pydicom
import pytest

from tests.integration.node_fixture import RunningNode

pytestmark = pytest.mark.integration


def _result_modalities(node: RunningNode, study_uid: str) -> list[str]:
    """Modalities of the node's result series: one SEG and one SR (the default results)."""
    return sorted(
        s["MainDicomTags"]["Modality"]
        for s in node.study_series(study_uid)
        if s["MainDicomTags"].get("Modality") in ("SEG", "SR")
    )


RESULTS = ["SEG", "SR"]


def test_study_that_arrived_before_a_stop_is_processed_after_restart(node_in, ct_sample, new_study) -> None:
    node: RunningNode = node_in(stable_age=5)
    node.start()
    study = new_study(ct_sample)
    uid = node.send(study)
    node.stop()  # well within the stable age: Orthanc never fired StableStudy
    node.start()
    jobs = node.wait_for_jobs(uid)
    assert [(job["status"], job["trigger"]) for job in jobs] == [("done", "replay")], jobs
    assert _result_modalities(node, uid) == RESULTS


def _mixed_orientation_copy(source: Path, target: Path) -> Path:
    """The sample with one slice in five turned coronal, as if reformats were mixed in."""
    target.mkdir(parents=True)
    for n, path in enumerate(sorted(source.iterdir())):
        ds = pydicom.dcmread(path)
        if n % 5 == 2:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        ds.save_as(target / path.name)
    return target


def test_broken_study_fails_with_a_reason_and_the_next_study_is_processed(
    node_in, ct_sample, new_study, tmp_path
) -> None:
    node: RunningNode = node_in()
    node.start()
    broken = _mixed_orientation_copy(new_study(ct_sample), tmp_path / "broken")
    (failed,) = node.wait_for_jobs(node.send(broken))
    assert failed["status"] == "failed"
    assert "orientation" in failed["error"]
    assert "Traceback" not in failed["error"]
    good = new_study(ct_sample)
    (done,) = node.wait_for_jobs(node.send(good))
    assert done["status"] == "done"


def test_job_of_a_killed_worker_is_claimed_again_and_completes_once(node_in, ct_sample, new_study) -> None:
    node: RunningNode = node_in(lease=4)
    node.start()
    study = new_study(ct_sample)
    uid = node.send(study)
    deadline = time.monotonic() + 120
    running = None
    while time.monotonic() < deadline and running is None:
        running = next((job for job in node.jobs(study=uid) if job["status"] == "running"), None)
        time.sleep(0.05)
    assert running is not None, node.jobs(study=uid)
    worker_pid = int(running["lease_owner"].rsplit(":", 1)[1])
    os.kill(worker_pid, signal.SIGKILL)
    (job,) = node.wait_for_jobs(uid)
    assert job["status"] == "done"
    assert job["attempts"] == 2
    assert _result_modalities(node, uid) == RESULTS
