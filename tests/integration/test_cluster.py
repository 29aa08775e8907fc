"""A multi-host node with real processes (node.devtools.cluster): two Orthancs sharing one
PostgreSQL index and storage, a worker host with three workers, one job database, no shared
files. A burst of studies goes to both Orthancs while a worker is killed mid-job and the
routing Orthanc is killed and restarted: every study ends with exactly one SEG and one SR,
counted through the other Orthanc, no job is lost or done twice, and routing moves to the
surviving Orthanc within :data:`TAKEOVER_S`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests

from node.devtools.cluster import Host, LocalCluster
from node.devtools.demo import first_study_uid
from node.devtools.postgres import PostgresUnavailable, running_cluster
from node.devtools.samples import copy_with_new_uids
from node.devtools.storescu import send_folder
from tests.integration.node_fixture import wait_for
from tests.requirements import skip_or_fail

pytestmark = pytest.mark.integration

STUDIES = 6
#: how soon the standby Orthanc must route once the routing one is killed: its poll (2 s), the
#: lock freed when PostgreSQL notices the dead session, and a follower started
TAKEOVER_S = 15.0


@pytest.fixture(scope="module")
def cluster(node_components: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with ExitStack() as stack:
        try:
            server = stack.enter_context(running_cluster())
        except PostgresUnavailable as error:
            skip_or_fail(str(error))
        running = LocalCluster(
            tmp_path_factory.mktemp("cluster"),
            server,
            orthancs=2,
            worker_hosts=1,
            workers_per_host=3,
            extra={"worker": {"lease": 6, "poll_interval": 0.2}, "orthanc": {"stable_age": 2}},
        )
        stack.callback(running.stop)
        running.start()
        yield running


def _get(cluster: LocalCluster, host: Host, path: str) -> Any:
    answer = requests.get(f"{host.url}{path}", auth=cluster.admin(), timeout=30)
    answer.raise_for_status()
    return answer.json()


def _routing(cluster: LocalCluster, host: Host) -> str | None:
    try:
        answer = requests.get(f"{host.url}/ai/health", auth=cluster.admin(), timeout=5)
    except requests.RequestException:
        return None
    return str(answer.json().get("intake", {}).get("routing"))


def _orthanc_pid(host: Host) -> int:
    found = subprocess.run(
        ["pgrep", "-f", f"Orthanc {host.data_dir / 'orthanc' / 'orthanc.json'}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert len(found) == 1, found
    return int(found[0])


def test_a_burst_through_two_orthancs_survives_a_killed_worker_and_a_killed_orthanc(
    cluster: LocalCluster, ct_sample: Path, tmp_path: Path
) -> None:
    first, second = cluster.orthanc_hosts
    leader, standby = (first, second) if _routing(cluster, first) == "leading" else (second, first)
    studies = [copy_with_new_uids(ct_sample, tmp_path / f"study-{n}") for n in range(STUDIES)]
    uids = []
    with ThreadPoolExecutor(2) as pool:  # both Orthancs take studies at once
        for n, study in enumerate(studies):
            host = cluster.orthanc_hosts[n % 2]
            pool.submit(send_folder, study, host="127.0.0.1", port=host.dicom_port, called_aet="AINODE")
            uids.append(first_study_uid(study))

    # a worker killed in the middle of a job
    running = wait_for(
        "a running job",
        lambda: [job for job in _get(cluster, standby, "/ai/jobs") if job["status"] == "running"],
        timeout=240,
    )
    os.kill(int(running[0]["lease_owner"].rsplit(":", 1)[1]), signal.SIGKILL)

    # the routing Orthanc killed: the other one routes within TAKEOVER_S; its supervisor
    # starts it again, as a standby
    killed_at = time.monotonic()
    os.kill(_orthanc_pid(leader), signal.SIGKILL)
    wait_for("the other Orthanc routing", lambda: _routing(cluster, standby) == "leading", timeout=TAKEOVER_S)
    takeover = time.monotonic() - killed_at
    wait_for("the killed Orthanc back", lambda: _routing(cluster, leader) is not None, timeout=120)

    def finished() -> list[dict[str, Any]] | None:
        jobs = _get(cluster, standby, "/ai/jobs?limit=1000")
        done = [job for job in jobs if job["status"] in ("done", "failed")]
        return jobs if len(jobs) >= STUDIES and len(done) == len(jobs) else None

    jobs = wait_for("every job finished", finished, timeout=600)
    assert sorted(job["study_instance_uid"] for job in jobs) == sorted(uids), "a job lost or run twice"
    assert [job["status"] for job in jobs] == ["done"] * STUDIES, [job.get("error") for job in jobs]
    assert any(job["attempts"] == 2 for job in jobs)  # the killed worker's, claimed again
    # counted through the Orthanc that was not killed: one SEG and one SR per study
    for uid in uids:
        study_id = requests.post(
            f"{standby.url}/tools/lookup", data=uid, auth=cluster.admin(), timeout=30
        ).json()[0]["ID"]
        modalities = sorted(
            series["MainDicomTags"]["Modality"]
            for series in _get(cluster, standby, f"/studies/{study_id}/series")
        )
        assert modalities == ["CT", "SEG", "SR"], (uid, modalities)
    print(f"routing moved to {standby.name} {takeover:.1f} s after {leader.name} was killed")
