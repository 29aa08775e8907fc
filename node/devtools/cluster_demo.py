"""`make cluster-demo`: a multi-host node on this one machine, a burst of studies, the numbers.

It starts a throwaway PostgreSQL, two Orthanc hosts and a worker host of three workers
(node.devtools.cluster: separate data folders, no shared files, TCP only), sends a burst of
copies of the CT sample to both Orthancs, waits for every job, prints studies per minute, the
time of each stage and where each study was received and processed, then stops everything.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from node.devtools.cluster import LocalCluster
from node.devtools.demo import first_study_uid
from node.devtools.postgres import running_cluster
from node.devtools.samples import copy_with_new_uids, ensure_sample
from node.devtools.storescu import send_folder


def run(studies: int, orthancs: int, workers: int, console: Console) -> int:
    sample = ensure_sample("ct", Path(".cache") / "samples")
    with tempfile.TemporaryDirectory(prefix="ai-node-cluster-") as folder, running_cluster() as postgres:
        cluster = LocalCluster(
            Path(folder), postgres, orthancs=orthancs, worker_hosts=1, workers_per_host=workers
        )
        try:
            console.print(
                f"Starting PostgreSQL (port {postgres.port}), {orthancs} Orthanc hosts, {workers} workers …"
            )
            cluster.start()
            for host in cluster.hosts:
                where = host.url if host.role == "orthanc" else "workers only"
                console.print(f"  {host.name:<11} {host.role:<8} {where}  data folder {host.data_dir}")
            copies = [
                copy_with_new_uids(sample, Path(folder) / "studies" / f"{n:03d}") for n in range(studies)
            ]
            received = {
                first_study_uid(copy): cluster.orthanc_hosts[n % orthancs] for n, copy in enumerate(copies)
            }
            started = time.monotonic()
            with ThreadPoolExecutor(orthancs) as pool:
                for host, copy in zip(received.values(), copies, strict=True):
                    pool.submit(
                        send_folder, copy, host="127.0.0.1", port=host.dicom_port, called_aet="AINODE"
                    )
            jobs = _wait(cluster, studies, console)
            elapsed = time.monotonic() - started
        finally:
            cluster.stop()
    _report(jobs, received, elapsed, console)
    return 0 if all(job["status"] == "done" for job in jobs) else 1


def _wait(cluster: LocalCluster, studies: int, console: Console) -> list[dict[str, Any]]:
    host = cluster.orthanc_hosts[-1]
    with Progress(console=console) as progress:
        task = progress.add_task("jobs done", total=studies)
        while True:
            jobs = requests.get(f"{host.url}/ai/jobs?limit=1000", auth=cluster.admin(), timeout=30).json()
            finished = [job for job in jobs if job["status"] in ("done", "failed")]
            progress.update(task, completed=len(finished))
            if len(jobs) >= studies and len(finished) == len(jobs):
                return list(jobs)
            time.sleep(1)


def _report(jobs: list[dict[str, Any]], received: dict[str, Any], elapsed: float, console: Console) -> None:
    console.print(
        f"\n{len(jobs)} studies in {elapsed:.0f} s: {len(jobs) / elapsed * 60:.1f} studies per minute "
        f"({sum(job['status'] == 'done' for job in jobs)} done)"
    )
    stages: dict[str, list[float]] = defaultdict(list)
    for job in jobs:
        for stage, seconds in (job.get("stage_timings") or {}).items():
            stages[stage].append(seconds)
    table = Table("stage", "median s", "max s", title="Time per stage")
    for stage, values in stages.items():
        table.add_row(stage, f"{statistics.median(values):.2f}", f"{max(values):.2f}")
    console.print(table)
    where = Table("study", "received by", "processed by (worker)", "status", title="Where each study went")
    for job in sorted(jobs, key=lambda job: job["id"]):
        where.add_row(
            job["study_instance_uid"][-16:],
            received[job["study_instance_uid"]].name,
            job["lease_owner"],
            job["status"],
        )
    console.print(where)
    console.print("Jobs per worker:", dict(Counter(job["lease_owner"] for job in jobs)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=12)
    parser.add_argument("--orthancs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args(argv)
    return run(args.studies, args.orthancs, args.workers, Console())


if __name__ == "__main__":
    raise SystemExit(main())
