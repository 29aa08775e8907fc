"""`ai-node run`: one Orthanc and N worker processes, kept alive together.

A worker that dies is started again (its job is claimed again when its lease ends); if
Orthanc dies the node stops, because nothing works without it. SIGINT/SIGTERM stop the
workers first (each releases its job), then Orthanc.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from node.config import Settings
from node.errors import NodeError
from node.orthanc.process import OrthancProcess, runtime_paths

log = logging.getLogger(__name__)

RESTART_BACKOFF_MAX = 30.0


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
        self.orthanc = OrthancProcess(settings)
        self.workers = [WorkerProcess(index) for index in range(settings.worker.count)]
        self.stopping = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        pid_path = pid_file(self.settings)
        pid_path.parent.mkdir(parents=True, exist_ok=True)
        pid_path.write_text(str(os.getpid()))
        try:
            self.orthanc.start()
            log.info(
                "Orthanc is up: HTTP %s, DICOM AE %s on port %s",
                self.settings.orthanc_url,
                self.settings.orthanc.aet,
                self.settings.orthanc.dicom_port,
            )
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
            if self.orthanc.poll() is not None:
                log.error(
                    "Orthanc exited (status %s); stopping the node. See %s",
                    self.orthanc.poll(),
                    runtime_paths(self.settings)["logs"] / "orthanc.log",
                )
                return 1
            for worker in self.workers:
                self._keep_alive(worker)
            time.sleep(0.2)
        return 0

    def _keep_alive(self, worker: WorkerProcess) -> None:
        if worker.process is not None and worker.process.poll() is None:
            return
        now = time.monotonic()
        if worker.process is not None:
            status = worker.process.returncode
            worker.process = None
            worker.restarts += 1
            delay = min(RESTART_BACKOFF_MAX, 2.0 ** min(worker.restarts, 5))
            worker.next_start = now + delay
            log.warning("worker %s exited with status %s; restarting in %.0f s", worker.index, status, delay)
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
