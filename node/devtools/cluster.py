"""A multi-host node on one machine, as separate hosts would run it: `make cluster-demo` and the
cluster tests.

Every "host" is an ``ai-node run --role ...`` process with a data folder of its own; they share
nothing but a PostgreSQL server (the job database, and Orthanc's index and storage) and TCP:
no file of one host is read by another. What an admin copies between real hosts, this copies
between folders before the hosts start: the users file (every Orthanc must know the same
users) and the secrets key (every host must decrypt the destinations' secrets). A worker host
gets only its own user's password file (docs/scaling.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from node.credentials import Role, add_user, ensure_credentials, load_credentials
from node.db.secrets import SecretBox
from node.devtools.postgres import PostgresCluster
from node.support.private import write_private

WORKER_USER = "cluster-worker"
JOB_DATABASE = "ai_node_jobs"
ORTHANC_DATABASE = "orthanc_index"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Host:
    """One host of the cluster: its data folder, its settings, its `ai-node run` process."""

    name: str
    folder: Path
    settings: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def role(self) -> str:
        return str(self.settings["cluster"]["role"])

    @property
    def config_file(self) -> Path:
        return self.folder / "ai-node.yaml"

    @property
    def data_dir(self) -> Path:
        return self.folder / "var"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings['orthanc']['http_port']}"

    @property
    def dicom_port(self) -> int:
        return int(self.settings["orthanc"]["dicom_port"])

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_private(self.config_file, yaml.safe_dump(self.settings))
        log = open(self.folder / "host.log", "ab")  # noqa: SIM115 - the process keeps it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node.cli.main", "run", "--config", str(self.config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        log.close()

    def stop(self, timeout: float = 60) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        text = ""
        for path in (self.folder / "host.log", self.data_dir / "logs" / "orthanc.log"):
            if path.exists():
                text += f"--- {self.name}: {path.name}\n" + "".join(
                    path.read_text(errors="replace").splitlines(True)[-lines:]
                )
        return text


@dataclass
class LocalCluster:
    """``orthancs`` Orthanc hosts and ``worker_hosts`` worker hosts over one PostgreSQL."""

    folder: Path
    postgres: PostgresCluster
    orthancs: int = 2
    worker_hosts: int = 1
    workers_per_host: int = 3
    #: more settings for every host (e.g. short leases in the tests)
    extra: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    #: names of the job database and of Orthanc's shared index on the server (several clusters
    #: may use one server one after the other)
    job_database: str = JOB_DATABASE
    orthanc_database: str = ORTHANC_DATABASE
    hosts: list[Host] = field(default_factory=list)

    @property
    def orthanc_hosts(self) -> list[Host]:
        return [host for host in self.hosts if host.role == "orthanc"]

    @property
    def worker_host_list(self) -> list[Host]:
        return [host for host in self.hosts if host.role == "worker"]

    def start(self, timeout: float = 120) -> None:
        jobs = self.postgres.create_database(self.job_database)
        self.postgres.create_database(self.orthanc_database)
        shared = {"database_url": jobs, **self.extra}
        for index in range(self.orthancs):
            self.hosts.append(self._orthanc_host(index, shared))
        # what an admin copies to every host before its first start
        first = self.orthanc_hosts[0]
        ensure_credentials(first.data_dir / "credentials.json")
        worker = add_user(first.data_dir / "credentials.json", WORKER_USER, Role.WORKER)
        SecretBox.from_key_file(first.data_dir / "secrets.key")
        for host in self.orthanc_hosts[1:]:
            host.data_dir.mkdir(parents=True, exist_ok=True)
            for name in ("credentials.json", "secrets.key"):
                shutil.copy2(first.data_dir / name, host.data_dir / name)
        urls = [host.url for host in self.orthanc_hosts]
        for index in range(self.worker_hosts):
            host = self._worker_host(index, shared, urls)
            host.data_dir.mkdir(parents=True, exist_ok=True)
            write_private(host.folder / "worker.password", worker.password + "\n")
            shutil.copy2(first.data_dir / "secrets.key", host.data_dir / "secrets.key")
            self.hosts.append(host)
        # one Orthanc at a time: the first creates the shared index's schema
        for host in self.orthanc_hosts:
            host.start()
            self.wait_until_answering(host, timeout)
        for host in self.worker_host_list:
            host.start()

    def _orthanc_host(self, index: int, shared: dict[str, Any]) -> Host:
        folder = self.folder / f"orthanc-{index + 1}"
        settings = {
            **shared,
            "data_dir": str(folder / "var"),
            "orthanc": {
                "http_port": free_port(),
                "dicom_port": free_port(),
                "stable_age": shared.get("orthanc", {}).get("stable_age", 2),
            },
            "worker": {**shared.get("worker", {}), "count": 0},
            "cluster": {
                "role": "orthanc",
                "orthanc_index": {
                    "host": "127.0.0.1",
                    "port": self.postgres.port,
                    "database": self.orthanc_database,
                    "user": "postgres",
                },
            },
        }
        return Host(f"orthanc-{index + 1}", folder, settings, env=self.env)

    def _worker_host(self, index: int, shared: dict[str, Any], urls: Sequence[str]) -> Host:
        folder = self.folder / f"workers-{index + 1}"
        settings = {
            **shared,
            "data_dir": str(folder / "var"),
            "worker": {**shared.get("worker", {}), "count": self.workers_per_host},
            "cluster": {
                "role": "worker",
                "orthanc": {
                    "urls": list(urls),
                    "user": WORKER_USER,
                    "password_file": str(folder / "worker.password"),
                },
            },
        }
        return Host(f"workers-{index + 1}", folder, settings, env=self.env)

    def admin(self) -> tuple[str, str]:
        credentials = load_credentials(self.orthanc_hosts[0].data_dir / "credentials.json")
        return credentials.users["admin"].basic_auth()

    def wait_until_answering(self, host: Host, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if host.process is not None and host.process.poll() is not None:
                raise RuntimeError(f"{host.name} exited during start:\n{host.log_tail()}")
            try:
                if requests.get(f"{host.url}/ai/health", auth=self.admin(), timeout=2).status_code in (
                    200,
                    503,
                ):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{host.name} did not answer within {timeout} s:\n{host.log_tail()}")

    def stop(self) -> None:
        # workers first, so that none is left waiting on an Orthanc that is gone
        for host in [*self.worker_host_list, *self.orthanc_hosts]:
            host.stop()

    def log_tail(self) -> str:
        return "\n".join(host.log_tail() for host in self.hosts)
