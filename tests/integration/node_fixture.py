"""A real node for integration tests: `ai-node run` (the same launcher as `make run`) in a
subprocess, with its own data folder and free ports."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from node.orthanc.client import OrthancClient
from node.storescu import send_folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningNode:
    folder: Path
    http_port: int
    dicom_port: int
    stable_age: float
    lease: float
    workers: int = 1
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_file(self) -> Path:
        return self.folder / "ai-node.yaml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def client(self) -> OrthancClient:
        return OrthancClient(self.url)

    def write_config(self) -> None:
        config = {
            "data_dir": str(self.folder / "var"),
            "orthanc": {
                "http_port": self.http_port,
                "dicom_port": self.dicom_port,
                "stable_age": self.stable_age,
            },
            "worker": {"count": self.workers, "lease": self.lease, "poll_interval": 0.2},
        }
        self.config_file.write_text(yaml.safe_dump(config))

    def start(self, timeout: float = 90) -> None:
        self.write_config()
        log = open(self.folder / "node-console.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "run", "--config", str(self.config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the node exited during start:\n{self.console_tail()}")
            try:
                if requests.get(f"{self.url}/ai/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the node did not start in {timeout} s:\n{self.console_tail()}")

    def stop(self, timeout: float = 60) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"the node did not stop on SIGINT within {timeout} s") from None

    def console_tail(self, lines: int = 60) -> str:
        text = ""
        for name in ("node-console.log", "var/logs/orthanc.log"):
            path = self.folder / name
            if path.exists():
                text += f"--- {name}\n" + "".join(path.read_text(errors="replace").splitlines(True)[-lines:])
        return text

    def send(self, folder: Path) -> None:
        send_folder(folder, host="127.0.0.1", port=self.dicom_port, called_aet="AINODE")

    def jobs(self, **query: str) -> list[dict[str, Any]]:
        return list(self.client.get_json("/ai/jobs?" + "&".join(f"{k}={v}" for k, v in query.items())))

    def wait_for_jobs(self, study_uid: str, *, count: int = 1, timeout: float = 240) -> list[dict[str, Any]]:
        """Wait until the study has ``count`` jobs and all of them finished."""
        deadline = time.monotonic() + timeout
        jobs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            jobs = self.jobs(study=study_uid)
            if len(jobs) >= count and all(job["status"] in ("done", "failed") for job in jobs):
                return jobs
            time.sleep(0.5)
        raise AssertionError(
            f"jobs of {study_uid} not finished after {timeout} s: {jobs}\n{self.console_tail()}"
        )

    def orthanc_study_id(self, study_uid: str) -> str:
        (found,) = self.client.post_json(
            "/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
        )
        return str(found)

    def study_series(self, study_uid: str) -> list[dict[str, Any]]:
        return list(self.client.get_json(f"/studies/{self.orthanc_study_id(study_uid)}/series"))


def make_node(folder: Path, *, stable_age: float = 2, lease: float = 60, workers: int = 1) -> RunningNode:
    folder.mkdir(parents=True, exist_ok=True)
    return RunningNode(
        folder=folder,
        http_port=free_port(),
        dicom_port=free_port(),
        stable_age=stable_age,
        lease=lease,
        workers=workers,
    )
