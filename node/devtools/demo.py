"""`ai-node demo`: send a real sample study to the running node and show what came back."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from node.config import ResultKind, Settings
from node.credentials import ADMIN_USER, credentials_path
from node.devtools.samples import SampleName, ensure_sample
from node.devtools.storescu import send_folder
from node.errors import NodeError
from node.orthanc.client import OrthancClient

console = Console()


def first_study_uid(folder: Path) -> str:
    import pydicom

    first = next(path for path in sorted(folder.rglob("*")) if path.is_file())
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def run_demo(settings: Settings, study: SampleName, *, timeout: float = 600.0) -> int:
    cache = Path(".cache") / "samples"
    console.print(f"Preparing the sample study [bold]{study}[/] (converted once into {cache}) ...")
    folder = ensure_sample(study, cache)
    study_uid = first_study_uid(folder)
    client = OrthancClient.for_node(settings)
    console.print(
        f"Sending it with storescu to {settings.orthanc.aet}@127.0.0.1:{settings.orthanc.dicom_port} ..."
    )
    send_folder(folder, host="127.0.0.1", port=settings.orthanc.dicom_port, called_aet=settings.orthanc.aet)
    console.print(
        f"Waiting for the study to become stable ({settings.orthanc.stable_age.total_seconds():.0f} s) "
        "and for the pipeline to run ..."
    )
    jobs = wait_for_jobs(client, study_uid, timeout)
    for job in jobs:
        print_job(job, client, settings)
    if settings.orthanc.authentication:
        console.print(
            f"\nOrthanc asks for a user: [bold]{ADMIN_USER}[/], with the password printed at the "
            f"node's first start and kept in {credentials_path(settings)}."
        )
    console.print("\nStop the node with [bold]make stop[/] (or `.venv/bin/ai-node stop`).")
    return 0 if all(job["status"] == "done" for job in jobs) else 1


def wait_for_jobs(client: OrthancClient, study_uid: str, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    with console.status("processing ...") as status:
        while time.monotonic() < deadline:
            jobs = client.get_json(f"/ai/jobs?study={study_uid}")
            if jobs and all(job["status"] in ("done", "failed") for job in jobs):
                return list(jobs)
            if jobs:
                status.update(", ".join(f"{job['pipeline_name']}: {job['status']}" for job in jobs))
            time.sleep(1)
    raise NodeError(f"no result for study {study_uid} after {timeout:.0f} s; see `ai-node` logs in var/logs")


def print_job(job: dict[str, Any], client: OrthancClient, settings: Settings) -> None:
    pipeline = f"{job['pipeline_name']} {job['pipeline_version']}"
    if job["status"] != "done":
        console.print(f"[red]Job {job['id']} ({pipeline}) failed:[/] {job['error']}")
        return
    result = job["result"]
    table = Table(title=f"Job {job['id']}: {pipeline}")
    table.add_column("Segment")
    table.add_column("Volume (mL)", justify="right")
    table.add_column("Mean", justify="right")
    for segment in result["segments"]:
        mean = "" if segment["mean"] is None else f"{segment['mean']:.1f}"
        table.add_row(segment["label"], f"{segment['volume_ml']:.1f}", mean)
    console.print(table)
    # only the kinds pipeline_settings.NAME.results lists are in the result
    for kind in ResultKind:
        if kind in result:
            console.print(f"{kind.label} SOP Instance UID: {result[kind]['sop_instance_uid']}")
    timings = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in job["stage_timings"].items())
    console.print(f"Stages: {timings}")
    console.print(
        f"Study in Orthanc: {settings.orthanc_url}/app/explorer.html#study?uuid={job['orthanc_study_id']}"
    )
