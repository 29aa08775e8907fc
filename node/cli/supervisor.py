"""`ai-node run`: one Orthanc and N worker processes, kept alive together.

A process that dies is started again, after a backoff that grows with each restart (2 s, 4 s
... 30 s) so that a crash loop does not spin: a worker's job is claimed again when its lease
ends; a restarted Orthanc replays its change log from the node's cursor, and the workers'
requests to it are retried meanwhile. Each restart is logged and counted in the job
database, where ``/ai/health`` shows it. SIGINT/SIGTERM stop the workers first (each releases
its job), then Orthanc.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from node.config import Settings
from node.db.database import create_engine_for
from node.db.jobs import JobStore
from node.errors import NodeError
from node.orthanc.process import OrthancProcess, runtime_paths, write_node_config

log = logging.getLogger(__name__)

RESTART_BACKOFF_MAX = 30.0
#: node_state keys of the restart counts /ai/health shows, one per host (see restarts_key)
RESTARTS_PREFIX = "supervisor.restarts."


def restarts_key(settings: Settings) -> str:
    """This host's key: its name and data folder (the hosts of a cluster demo share a name)."""
    return f"{RESTARTS_PREFIX}{socket.gethostname()}:{settings.resolved_data_dir}"


def restart_delay(restarts: int) -> float:
    return min(RESTART_BACKOFF_MAX, 2.0 ** min(restarts, 5))


def exit_description(status: int | None) -> str:
    """How a process ended, in words (a negative status is the signal that killed it)."""
    if status is None:
        return "still running"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        hint = " (e.g. by the kernel's out-of-memory killer)" if -status == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with status {status}"


@dataclass
class RestartCount:
    restarts: int = 0
    last_exit: str | None = None
    last_restart_at: str | None = None

    def note(self, status: int | None) -> None:
        self.restarts += 1
        self.last_exit = exit_description(status)
        self.last_restart_at = datetime.now(UTC).isoformat(timespec="seconds")


def pid_file(settings: Settings) -> Path:
    return settings.resolved_data_dir / "ai-node.pid"


@dataclass
class WorkerProcess:
    index: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = field(default=0.0)


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.role = settings.cluster.role
        self.orthanc = OrthancProcess(settings)
        #: an Orthanc host of a cluster runs no workers; a worker host no Orthanc
        workers = 0 if self.role == "orthanc" else settings.worker.count
        self.workers = [WorkerProcess(index) for index in range(workers)]
        self.stopping = False
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.orthanc_restarts = RestartCount()
        self.worker_restarts = RestartCount()
        self._orthanc_next_start = 0.0
        self._store: JobStore | None = None

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        pid_path = pid_file(self.settings)
        pid_path.parent.mkdir(parents=True, exist_ok=True)
        pid_path.write_text(str(os.getpid()))
        try:
            if self.role == "worker":
                write_node_config(self.settings)
                log.info(
                    "worker host: %d worker(s) for the Orthancs at %s",
                    len(self.workers),
                    ", ".join(self.settings.orthanc_urls),
                )
            else:
                self.orthanc.start()
                log.info(
                    "Orthanc is up: HTTP %s, DICOM AE %s on port %s%s",
                    self.settings.orthanc_url,
                    self.settings.orthanc.aet,
                    self.settings.orthanc.dicom_port,
                    "; no workers on this host (cluster.role orthanc)" if self.role == "orthanc" else "",
                )
            self._record_restarts()
            return self._watch()
        except NodeError as error:
            log.error("%s", error)
            return 1
        finally:
            self._stop_workers()
            self.orthanc.stop()
            pid_path.unlink(missing_ok=True)
            log.info("node stopped")

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _watch(self) -> int:
        while not self.stopping:
            if self.role != "worker":
                self._keep_orthanc_alive()
            for worker in self.workers:
                self._keep_alive(worker)
            time.sleep(0.2)
        return 0

    def _keep_orthanc_alive(self) -> None:
        if self.orthanc.process is not None:
            status = self.orthanc.process.poll()
            if status is None:
                return
            self.orthanc.process = None
            self.orthanc_restarts.note(status)
            delay = restart_delay(self.orthanc_restarts.restarts)
            self._orthanc_next_start = time.monotonic() + delay
            log.error(
                "Orthanc %s; restarting it in %.0f s (restart %d). See %s",
                exit_description(status),
                delay,
                self.orthanc_restarts.restarts,
                runtime_paths(self.settings)["logs"] / "orthanc.log",
            )
            return
        if time.monotonic() < self._orthanc_next_start:
            return
        try:
            self.orthanc.start()
        except NodeError as error:
            self.orthanc.process = None
            self.orthanc_restarts.note(None)
            self.orthanc_restarts.last_exit = f"could not start: {error}"
            delay = restart_delay(self.orthanc_restarts.restarts)
            self._orthanc_next_start = time.monotonic() + delay
            log.error("Orthanc could not be started again: %s; trying again in %.0f s", error, delay)
            return
        log.warning("Orthanc is back (restart %d)", self.orthanc_restarts.restarts)
        self._record_restarts()

    def _record_restarts(self) -> None:
        """Write the restart counts where /ai/health reads them (the job database), from a
        thread of its own: a locked database (SQLite waits up to 30 s) must never keep the
        supervisor from watching its processes."""
        counts = json.dumps(
            {
                "since": self.started_at,
                "orthanc": vars(self.orthanc_restarts),
                "workers": vars(self.worker_restarts),
            }
        )
        threading.Thread(
            target=self._write_restarts, args=(counts,), name="restart-counts", daemon=True
        ).start()

    def _write_restarts(self, counts: str) -> None:
        try:
            if self._store is None:
                self._store = JobStore(create_engine_for(self.settings.resolved_database_url))
            self._store.set_state(restarts_key(self.settings), counts)
        except Exception:  # noqa: BLE001 - the counts are for show; a busy database must not stop the node
            log.warning("could not record the restart counts in the job database", exc_info=True)

    def _keep_alive(self, worker: WorkerProcess) -> None:
        if worker.process is not None and worker.process.poll() is None:
            return
        now = time.monotonic()
        if worker.process is not None:
            status = worker.process.returncode
            worker.process = None
            worker.restarts += 1
            self.worker_restarts.note(status)
            self._record_restarts()
            delay = restart_delay(worker.restarts)
            worker.next_start = now + delay
            log.warning(
                "worker %s %s; restarting it in %.0f s", worker.index, exit_description(status), delay
            )
        if now < worker.next_start:
            return
        config = runtime_paths(self.settings)["node_config"]
        worker.process = subprocess.Popen(
            [sys.executable, "-m", "node.cli.main", "worker", "--config", str(config)],
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops workers in order
        )
        log.info("worker %s started (pid %s)", worker.index, worker.process.pid)

    def _stop_workers(self, timeout: float = 20.0) -> None:
        running = [w.process for w in self.workers if w.process is not None and w.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %s did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()
