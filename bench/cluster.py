"""Throughput of a multi-host node, and what the job database costs a job.

- studies per minute on the CT sample for 1, 2 and 4 workers (one Orthanc host and one worker
  host over PostgreSQL, node.devtools.cluster: real processes, no shared files), and for one
  worker on one host with SQLite, the default: a burst of studies sent at once, timed from the
  first C-STORE to the last job done;
- the job database's own cost per job: enqueue, claim, three heartbeats and finish, on SQLite
  and on PostgreSQL (the throwaway server the cluster uses), one process, N jobs.

The numbers size docs/scaling.md. Every worker of a host shares its CPU cores: on a machine
with fewer cores than workers, more workers cannot be faster; the table says how many cores.

    .venv/bin/python bench/cluster.py --studies 8 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench.machine import cpu_description, python_description  # noqa: E402
from bench.sections import write_section  # noqa: E402
from node.db.database import create_engine_for, migrate  # noqa: E402
from node.db.jobs import JobStore, JobTrigger  # noqa: E402
from node.devtools.cluster import Host, LocalCluster, free_port  # noqa: E402
from node.devtools.postgres import PostgresCluster, running_cluster  # noqa: E402
from node.devtools.samples import copy_with_new_uids, ensure_sample  # noqa: E402
from node.devtools.storescu import send_folder  # noqa: E402

JOBS_FOR_DB_COST = 200


def burst(orthanc: Host, admin: tuple[str, str], studies: list[Path]) -> tuple[float, list[dict[str, Any]]]:
    """Send ``studies`` at once; seconds from the first C-STORE to the last job done, the jobs."""
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        for study in studies:
            pool.submit(send_folder, study, host="127.0.0.1", port=orthanc.dicom_port, called_aet="AINODE")
    while True:
        jobs = requests.get(f"{orthanc.url}/ai/jobs?limit=1000", auth=admin, timeout=30).json()
        if len(jobs) >= len(studies) and all(job["status"] in ("done", "failed") for job in jobs):
            return time.monotonic() - started, list(jobs)
        time.sleep(0.5)


def cluster_throughput(
    postgres: PostgresCluster, workers: int, studies: list[Path], folder: Path
) -> dict[str, Any]:
    cluster = LocalCluster(
        folder,
        postgres,
        orthancs=1,
        worker_hosts=1,
        workers_per_host=workers,
        # each run its own databases: a fresh cluster, as a new installation would be
        job_database=f"ai_node_jobs_{workers}",
        orthanc_database=f"orthanc_index_{workers}",
    )
    try:
        cluster.start()
        seconds, jobs = burst(cluster.orthanc_hosts[0], cluster.admin(), studies)
    finally:
        cluster.stop()
    return _row(f"PostgreSQL, {workers} worker{'s' if workers > 1 else ''} (worker host)", seconds, jobs)


def single_host_throughput(studies: list[Path], folder: Path) -> dict[str, Any]:
    """One host with SQLite and one worker: the default node (role all)."""
    from node.credentials import ensure_credentials, load_credentials

    host = Host(
        "single",
        folder,
        {
            "data_dir": str(folder / "var"),
            "orthanc": {"http_port": free_port(), "dicom_port": free_port(), "stable_age": 2},
            "worker": {"count": 1},
            "cluster": {"role": "all"},
        },
    )
    ensure_credentials(host.data_dir / "credentials.json")
    admin = load_credentials(host.data_dir / "credentials.json").users["admin"].basic_auth()
    host.start()
    try:
        _wait_answering(host, admin)
        seconds, jobs = burst(host, admin, studies)
    finally:
        host.stop()
    return _row("SQLite, 1 worker (one host)", seconds, jobs)


def _wait_answering(host: Host, admin: tuple[str, str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{host.url}/ai/health", auth=admin, timeout=2).status_code in (200, 503):
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{host.name} did not start:\n{host.log_tail()}")


def _row(setup: str, seconds: float, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    done = [job for job in jobs if job["status"] == "done"]
    per_job = [sum((job.get("stage_timings") or {}).values()) for job in done]
    return {
        "setup": setup,
        "studies": len(jobs),
        "failed": len(jobs) - len(done),
        "seconds": seconds,
        "per_minute": len(done) / seconds * 60,
        "job_median": statistics.median(per_job) if per_job else float("nan"),
    }


def database_cost(url: str) -> dict[str, float]:
    """Milliseconds per job of the queue's own statements, one process, no contention."""
    migrate(url)
    store = JobStore(create_engine_for(url))
    timings: dict[str, list[float]] = {"enqueue": [], "claim": [], "heartbeat": [], "complete": []}

    def timed(name: str, call: Any) -> Any:
        start = time.perf_counter()
        result = call()
        timings[name].append((time.perf_counter() - start) * 1000)
        return result

    for n in range(JOBS_FOR_DB_COST):
        timed(
            "enqueue",
            lambda n=n: store.enqueue(
                orthanc_study_id=f"bench-{n}",
                study_instance_uid=f"1.2.826.0.1.3680043.8.498.{n + 1}",
                pipeline_name="bench",
                pipeline_version="1",
                trigger=JobTrigger.STABLE_STUDY,
            ),
        )
    for _ in range(JOBS_FOR_DB_COST):
        job = timed("claim", lambda: store.claim(worker_id="bench:1", lease_seconds=60))
        for _ in range(3):
            timed("heartbeat", lambda job=job: store.heartbeat(job.id, "bench:1", 60))
        timed("complete", lambda job=job: store.complete(job.id, "bench:1", result={}, stage_timings={}))
    return {name: statistics.median(values) for name, values in timings.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--write", type=Path, help="Markdown file to write the section into")
    args = parser.parse_args()
    sample = ensure_sample("ct", ROOT / ".cache" / "samples")
    rows: list[dict[str, Any]] = []
    costs: dict[str, dict[str, float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="ai-node-bench-cluster-") as temporary,
        running_cluster() as postgres,
    ):
        folder = Path(temporary)

        def studies(tag: str) -> list[Path]:
            return [copy_with_new_uids(sample, folder / tag / f"{n:03d}") for n in range(args.studies)]

        costs["SQLite"] = database_cost(f"sqlite:///{folder / 'cost.sqlite'}")
        costs["PostgreSQL"] = database_cost(postgres.create_database("bench_cost"))
        rows.append(single_host_throughput(studies("single"), folder / "single"))
        print(rows[-1], flush=True)
        for workers in args.workers:
            rows.append(
                cluster_throughput(postgres, workers, studies(f"c{workers}"), folder / f"cluster-{workers}")
            )
            print(rows[-1], flush=True)
    text = _markdown(rows, costs, args.studies)
    print(text)
    if args.write:
        write_section(args.write, "bench/cluster.py", text)
    return 0


def _markdown(rows: list[dict[str, Any]], costs: dict[str, dict[str, float]], studies: int) -> str:
    lines = [
        "## Throughput: studies per minute (bench/cluster.py)",
        "",
        f"{datetime.now().date()}, {cpu_description()}, {python_description()}. A burst of {studies} "
        "copies of the CT sample (108 slices, ct-tissue, SEG + SR) sent at once; from the first "
        "C-STORE to the last job done. All processes share this machine's cores.",
        "",
        "| setup | studies | failed | seconds | studies/min | median job (s) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['setup']} | {row['studies']} | {row['failed']} | {row['seconds']:.1f} | "
            f"{row['per_minute']:.1f} | {row['job_median']:.1f} |"
        )
    lines += [
        "",
        f"The job database's own cost per job (median ms per statement, {JOBS_FOR_DB_COST} jobs, "
        "one process; a job: enqueue, claim, 3 heartbeats, complete):",
        "",
        "| database | enqueue | claim | heartbeat | complete | per job |",
        "|---|---|---|---|---|---|",
    ]
    for name, cost in costs.items():
        per_job = cost["enqueue"] + cost["claim"] + 3 * cost["heartbeat"] + cost["complete"]
        lines.append(
            f"| {name} | {cost['enqueue']:.2f} | {cost['claim']:.2f} | {cost['heartbeat']:.2f} | "
            f"{cost['complete']:.2f} | {per_job:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
