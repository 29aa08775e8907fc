"""Faults, on a real node: processes killed mid-stage, the job database locked, studies deleted
under the node's feet. After each, the node is healthy again, the other studies are processed,
and every routed study ends with exactly one set of results or one failed job whose reason a
PACS admin understands (docs/reliability.md lists the cases).

A worker is killed *in* a stage by holding it at a named point (:mod:`node.support.failpoints`): the
test waits for the point's marker, kills the pid written in it, and the restarted worker
passes the point and finishes the job.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from node.support.failpoints import DIRECTORY_VARIABLE
from tests.integration.node_fixture import RunningNode, wait_for

pytestmark = pytest.mark.integration

#: what each study ends with, in Orthanc: the default results of ct-tissue
RESULTS = ["SEG", "SR"]


def result_modalities(node: RunningNode, study_uid: str) -> list[str]:
    return sorted(
        s["MainDicomTags"]["Modality"]
        for s in node.study_series(study_uid)
        if s["MainDicomTags"].get("Modality") in ("SEG", "SR")
    )


def health(node: RunningNode) -> requests.Response:
    return node.session("admin").get(f"{node.url}/ai/health", timeout=10)


class Points:
    """The failpoints of one node's processes: arm one, wait for a process to hold there,
    release it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def arm(self, name: str) -> None:
        for old in self.folder.glob(f"{name}.*"):
            old.unlink()
        (self.folder / f"{name}.armed").touch()

    def reached(self, name: str, node: RunningNode, timeout: float = 180) -> int:
        marker = self.folder / f"{name}.reached"
        wait_for(
            f"a process holding at {name}", lambda: marker.exists() and marker.read_text(), timeout, node
        )
        return int(marker.read_text())

    def release(self, name: str) -> None:
        (self.folder / f"{name}.release").touch()


@pytest.fixture(scope="module")
def points(tmp_path_factory: pytest.TempPathFactory) -> Points:
    return Points(tmp_path_factory.mktemp("failpoints"))


@pytest.fixture(scope="module")
def faulty_node(node_components: None, tmp_path_factory, points: Points) -> Iterator[RunningNode]:
    """One worker, short leases, quick delivery retries, failpoints enabled."""
    from tests.integration.node_fixture import make_node

    node = make_node(
        tmp_path_factory.mktemp("faulty"),
        lease=4,
        stable_age=3,
        extra_config={"delivery": {"base_delay": 1, "max_delay": 4}},
        env={DIRECTORY_VARIABLE: str(points.folder)},
    )
    node.start()
    yield node
    node.stop()


@pytest.mark.parametrize("stage", ["fetch", "inference", "results", "deliver"])
def test_a_worker_killed_in_a_stage_is_replaced_and_its_job_done_once(
    faulty_node: RunningNode, points: Points, ct_sample: Path, new_study, stage: str
) -> None:
    points.arm(stage)
    uid = faulty_node.send(new_study(ct_sample))
    pid = points.reached(stage, faulty_node)
    os.kill(pid, signal.SIGKILL)

    (job,) = faulty_node.wait_for_jobs(uid, timeout=240)
    assert (job["status"], job["attempts"]) == ("done", 2), job
    assert result_modalities(faulty_node, uid) == RESULTS
    restarts = health(faulty_node).json()["restarts"]
    assert restarts["workers"]["restarts"] >= 1
    assert restarts["workers"]["last_exit"].startswith("killed by SIGKILL")


def test_orthanc_killed_while_a_worker_stores_results_comes_back_and_they_are_stored_once(
    faulty_node: RunningNode, points: Points, ct_sample: Path, new_study
) -> None:
    points.arm("store")
    uid = faulty_node.send(new_study(ct_sample))
    points.reached("store", faulty_node)
    os.kill(_orthanc_pid(faulty_node), signal.SIGKILL)
    points.release("store")

    (answer,) = wait_for("Orthanc back", lambda: _answers(faulty_node), node=faulty_node)
    assert answer.status_code == 200, answer.text
    (job,) = faulty_node.wait_for_jobs(uid, timeout=240)
    assert job["status"] == "done", job
    # the store waits for Orthanc to be back (a refused connection sent nothing, so it is
    # retried at once), else the delivery's own backoff tries again
    wait_for(
        "the results in Orthanc", lambda: result_modalities(faulty_node, uid) == RESULTS, node=faulty_node
    )
    (delivery,) = [d for d in faulty_node.client.get_json("/ai/deliveries") if d["job_id"] == job["id"]]
    assert delivery["status"] == "delivered", delivery
    restarts = health(faulty_node).json()["restarts"]["orthanc"]
    assert restarts["restarts"] == 1 and restarts["last_exit"].startswith("killed by SIGKILL")


def test_orthanc_killed_in_the_middle_of_a_study_processes_the_whole_study_once(
    faulty_node: RunningNode, ct_sample: Path, new_study, tmp_path: Path
) -> None:
    study = new_study(ct_sample)
    files = sorted(study.glob("*.dcm"))
    first, rest = tmp_path / "first", tmp_path / "rest"
    for folder, part in ((first, files[: len(files) // 2]), (rest, files[len(files) // 2 :])):
        folder.mkdir()
        for path in part:
            path.rename(folder / path.name)
    uid = faulty_node.send(first)
    os.kill(_orthanc_pid(faulty_node), signal.SIGKILL)
    wait_for("Orthanc back", lambda: _answers(faulty_node), node=faulty_node)
    faulty_node.send(rest)

    (job,) = faulty_node.wait_for_jobs(uid, timeout=240)
    assert job["status"] == "done", job
    assert result_modalities(faulty_node, uid) == RESULTS
    series = faulty_node.client.get_json(f"/series/{_ct_series(faulty_node, uid)}")
    assert len(series["Instances"]) == len(files)


def test_a_study_deleted_while_the_follower_routes_the_one_before_it_is_set_aside(
    faulty_node: RunningNode, points: Points, ct_sample: Path, new_study
) -> None:
    # The follower reads Orthanc's change log in batches; a study deleted after its batch was
    # read, while an earlier study of the batch is routed, is a 404 when its turn comes. That
    # used to stop routing for good: the cursor never passed it.
    node = faulty_node
    points.arm("follow")  # the follower holds before it reads its next batch
    points.reached("follow", node)
    kept, deleted = (node.send(new_study(ct_sample)) for _ in range(2))
    for uid in (kept, deleted):
        study = node.orthanc_study_id(uid)
        wait_for(
            "a stable study", lambda s=study: node.client.get_json(f"/studies/{s}")["IsStable"], node=node
        )
    deleted_id = node.orthanc_study_id(deleted)
    points.arm("route")  # ... and then while it routes the first study of the batch
    points.release("follow")
    points.reached("route", node)
    assert node.session("admin").delete(f"{node.url}/studies/{deleted_id}", timeout=30).status_code == 200
    points.release("route")

    (job,) = node.wait_for_jobs(kept, timeout=240)
    assert job["status"] == "done"
    problems = wait_for(
        "the deleted study set aside", lambda: node.client.get_json("/ai/intake/problems"), node=node
    )
    assert [(p["orthanc_study_id"], p["status"], p["reason"]) for p in problems] == [
        (deleted_id, "failed", "the study is no longer in Orthanc (deleted before it could be routed)")
    ]
    assert health(node).json()["intake_problems"] == {"retrying": 0, "failed": 1}
    # and routing goes on
    (later,) = node.wait_for_jobs(node.send(new_study(ct_sample)), timeout=240)
    assert later["status"] == "done"


def _orthanc_pid(node: RunningNode) -> int:
    found = subprocess.run(
        ["pgrep", "-f", f"Orthanc {node.folder / 'var' / 'orthanc' / 'orthanc.json'}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert len(found) == 1, found
    return int(found[0])


def _answers(node: RunningNode) -> tuple[requests.Response] | None:
    try:
        answer = health(node)
    except requests.RequestException:
        return None
    return (answer,) if answer.status_code in (200, 503) else None


def _ct_series(node: RunningNode, uid: str) -> str:
    (series,) = [s for s in node.study_series(uid) if s["MainDicomTags"].get("Modality") == "CT"]
    return str(series["ID"])


# -- the job database locked, studies deleted ----------------------------------------------


@pytest.fixture
def idle_node(node_in) -> RunningNode:
    """A node without workers: jobs stay queued until the test runs a worker itself."""
    node: RunningNode = node_in(
        workers=0, lease=4, stable_age=2, extra_config={"intake": {"max_lag": 3, "base_delay": 1}}
    )
    node.start()
    return node


def test_the_job_database_locked_longer_than_a_lease_delays_routing_and_loses_nothing(
    idle_node: RunningNode, ct_sample: Path, new_study
) -> None:
    node = idle_node
    database = sqlite3.connect(node.folder / "var" / "jobs.sqlite", timeout=30, isolation_level=None)
    database.execute("BEGIN EXCLUSIVE")
    try:
        studies = [node.send(new_study(ct_sample)) for _ in range(2)]
        (answer,) = wait_for(
            "an unhealthy node", lambda: (a := health(node)).status_code == 503 and (a,), node=node
        )
        body = answer.json()
        assert body["status"] == "unhealthy"
        assert any("routing is" in problem and "behind Orthanc" in problem for problem in body["problems"])
        assert body["intake"]["changes_behind"] > 0
        time.sleep(8)  # longer than the lease
    finally:
        database.execute("ROLLBACK")
        database.close()

    wait_for("a healthy node", lambda: health(node).status_code == 200, node=node)
    for uid in studies:
        (job,) = wait_for("the study's job", lambda uid=uid: node.jobs(study=uid), node=node)
        assert job["status"] == "queued"
    assert node.client.get_json("/ai/intake/problems") == []


def test_a_study_deleted_while_queued_fails_its_job_in_words(
    idle_node: RunningNode, ct_sample: Path, new_study
) -> None:
    node = idle_node
    uid = node.send(new_study(ct_sample))
    (queued,) = wait_for("a queued job", lambda: node.jobs(study=uid), node=node)
    node.session("admin").delete(f"{node.url}/studies/{node.orthanc_study_id(uid)}", timeout=30)

    with _worker(node):
        (job,) = node.wait_for_jobs(uid)
    assert job["status"] == "failed"
    assert (
        job["error"]
        == "the study is no longer in Orthanc (deleted after the job was queued); nothing to process"
    )


def test_a_study_deleted_while_its_job_runs_gets_no_results_back(
    idle_node: RunningNode, ct_sample: Path, new_study, tmp_path: Path
) -> None:
    node = idle_node
    uid = node.send(new_study(ct_sample))
    wait_for("a queued job", lambda: node.jobs(study=uid), node=node)
    orthanc_id = node.orthanc_study_id(uid)
    points = Points(tmp_path)
    points.arm("deliver")
    with _worker(node, {DIRECTORY_VARIABLE: str(tmp_path)}):
        points.reached("deliver", node)
        node.session("admin").delete(f"{node.url}/studies/{orthanc_id}", timeout=30)
        points.release("deliver")
        (job,) = node.wait_for_jobs(uid)
    assert job["status"] == "failed"
    assert job["error"] == (
        "the study was deleted from Orthanc while the job ran; its results were not stored or sent anywhere"
    )
    # storing the results would have brought the study back, with only the node's objects in it
    assert node.client.post_json("/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": uid}}) == []


class _worker:
    """`ai-node worker` for an idle node, stopped at the end of the block."""

    def __init__(self, node: RunningNode, env: dict[str, str] | None = None) -> None:
        self.node = node
        self.env = env or {}

    def __enter__(self) -> subprocess.Popen[bytes]:
        config = self.node.folder / "var" / "node.yaml"
        log = open(self.node.folder / "worker.log", "ab")  # noqa: SIM115 - closed once started
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node.cli.main", "worker", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        log.close()
        return self.process

    def __exit__(self, *exc_info: object) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
