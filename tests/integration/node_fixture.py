"""A real node for integration tests: `ai-node run` (the same launcher as `make run`) in a
subprocess, with its own data folder and free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from node.credentials import Role, add_user, ensure_credentials, load_credentials
from node.devtools.demo import first_study_uid
from node.devtools.storescu import send_folder
from node.orthanc.client import OrthancClient


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    what: str,
    log: Callable[[], str],
    timeout: float,
    interval: float = 0.2,
) -> None:
    """Wait until a process the tests started is ``ready``; if it exits first or ``timeout``
    passes, fail with what it logged."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited during start:\n{log()}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout} s:\n{log()}")
        time.sleep(interval)


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float = 120,
    node: RunningNode | None = None,
    interval: float = 0.2,
) -> Any:
    """``check()`` once it is truthy (a Response is falsy for an error status: wrap it), else an
    AssertionError naming ``what`` with the tail of ``node``'s logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s" + (f"\n{node.console_tail()}" if node else ""))


def answers_http(
    url: str, auth: tuple[str, str] | None = None, verify: str | bool = True, *, also: tuple[int, ...] = ()
) -> bool:
    """Whether ``url`` answers 2xx (or a status in ``also``) now (nothing listening, or another
    status: not yet)."""
    try:
        answer = requests.get(url, auth=auth, timeout=2, verify=verify)
    except requests.RequestException:
        return False
    return answer.ok or answer.status_code in also


@dataclass
class RunningNode:
    folder: Path
    http_port: int
    dicom_port: int
    stable_age: float
    lease: float
    workers: int = 1
    #: create the users before the first start (admin, ``viewer`` and ``sender`` with those roles);
    #: False leaves their creation to `ai-node run`, as on a real first start
    prepare_users: bool = True
    process: subprocess.Popen[bytes] | None = None
    #: more settings, merged over the ones above (e.g. {"delivery": {"base_delay": 1}})
    extra_config: dict[str, Any] = field(default_factory=dict)
    #: more environment for the node's processes (e.g. the fault suite's failpoints)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def credentials_file(self) -> Path:
        return self.folder / "var" / "credentials.json"

    def credential(self, name: str) -> tuple[str, str]:
        return load_credentials(self.credentials_file).users[name].basic_auth()

    @property
    def admin(self) -> tuple[str, str]:
        return self.credential("admin")

    @property
    def viewer(self) -> tuple[str, str]:
        return self.credential("viewer")

    def session(self, role: str = "admin") -> requests.Session:
        """A session as ``admin``, ``viewer`` or ``sender`` (users named after their roles), with
        no header but the one that keeps Orthanc's answers unzipped: what any script sends."""
        session = requests.Session()
        session.verify = self.trust
        session.trust_env = False  # else $REQUESTS_CA_BUNDLE overrides verify (psf/requests#3829)
        session.auth = self.credential(role)
        session.headers["Accept-Encoding"] = "identity"
        return session

    @property
    def config_file(self) -> Path:
        return self.folder / "ai-node.yaml"

    @property
    def https_certificate(self) -> str | None:
        https = self.extra_config.get("orthanc", {}).get("https")
        return None if https is None else str(https["certificate"])

    @property
    def trust(self) -> str | bool:
        """requests' ``verify`` for this node: its own certificate when it serves HTTPS."""
        return self.https_certificate or True

    @property
    def url(self) -> str:
        scheme = "http" if self.https_certificate is None else "https"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def client(self) -> OrthancClient:
        return OrthancClient(self.url, auth=self.admin, verify=self.trust)

    def write_config(self) -> None:
        extra = dict(self.extra_config)
        config = {
            "data_dir": str(self.folder / "var"),
            "orthanc": {
                "http_port": self.http_port,
                "dicom_port": self.dicom_port,
                "stable_age": self.stable_age,
                **extra.pop("orthanc", {}),
            },
            "worker": {
                "count": self.workers,
                "lease": self.lease,
                "poll_interval": 0.2,
                **extra.pop("worker", {}),
            },
            **extra,
        }
        self.config_file.write_text(yaml.safe_dump(config))

    def start(self, timeout: float = 90) -> None:
        self.write_config()
        if self.prepare_users and not self.credentials_file.exists():
            ensure_credentials(self.credentials_file)
            add_user(self.credentials_file, "viewer", Role.VIEWER)
            add_user(self.credentials_file, "sender", Role.SENDER)
        log = open(self.folder / "node-console.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node.cli.main", "run", "--config", str(self.config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        log.close()
        wait_until_ready(
            self.process,
            # the node creates the credentials file during start when it was not prepared
            lambda: answers_http(
                f"{self.url}/ai/health",
                self.admin if self.credentials_file.exists() else None,
                self.trust,
                also=(503,),  # up, but unhealthy (e.g. routing behind after a restart)
            ),
            what="the node",
            log=self.console_tail,
            timeout=timeout,
            interval=0.3,
        )

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

    def send(self, folder: Path) -> str:
        """Send a folder of one study with storescu; returns its Study Instance UID."""
        send_folder(folder, host="127.0.0.1", port=self.dicom_port, called_aet="AINODE")
        return first_study_uid(folder)

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


def make_node(
    folder: Path,
    *,
    stable_age: float = 2,
    lease: float = 60,
    workers: int = 1,
    prepare_users: bool = True,
    extra_config: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> RunningNode:
    folder.mkdir(parents=True, exist_ok=True)
    return RunningNode(
        folder=folder,
        http_port=free_port(),
        dicom_port=free_port(),
        stable_age=stable_age,
        lease=lease,
        workers=workers,
        prepare_users=prepare_users,
        extra_config=extra_config or {},
        env=env or {},
    )
