"""`ai-node worker`: claims jobs from the database and runs them, one at a time.

What is the worker's own: the job's lease (claim, heartbeat, release, finish), fetching the
input from Orthanc (:mod:`node.fetch`), staging the result objects and delivering them
(:mod:`node.delivery`). Everything between the volume and the validated objects is the one
processing chain, :func:`node.chain.process_series`. Any failure fails only its own job, with a
message for the PACS admin, logged once.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy.exc import SQLAlchemyError

from node import THIS_ORTHANC
from node.chain import SeriesResult, process_series
from node.config import Settings
from node.db.config_store import ConfigStore
from node.db.database import create_engine_for, migrate
from node.db.errors import LeaseLostError
from node.db.jobs import WORKER_STATE_PREFIX, Job, JobStore
from node.db.models import DeliveryStatus
from node.db.secrets import SecretBox
from node.delivery.queue import Delivery, DeliveryStore
from node.delivery.sender import DeliverySender
from node.delivery.staging import result_store
from node.errors import InputStudyError, NodeError, OrthancError, PipelineError
from node.fetch.series import fetch_series
from node.imaging.series import build_volume
from node.logs import job_context
from node.orthanc.client import OrthancClient
from node.pipeline.base import Pipeline
from node.pipeline.registry import PipelineRegistry
from node.results.identity import ResultIdentity
from node.results.seg import DeviceInfo
from node.run.device import claimable_pipelines, runtime_resolver
from node.run.execution import PipelineTimeoutError, exit_worker
from node.run.warm import WarmPipelines
from node.study.series import count_text
from node.support.failpoints import failpoint
from node.support.timing import StageTimer

log = logging.getLogger(__name__)

#: how often (seconds) a worker reports itself under node_state "worker:<id>" (read by
#: node.web.api, which considers a worker silent for WORKER_SILENCE gone)
REPORT_EVERY = 10.0


#: how long a worker waits before claiming again after Orthanc did not answer
ORTHANC_DOWN_PAUSE = 10.0
#: how long a worker waits after the job database did not answer
DATABASE_PAUSE = 5.0


class WorkerStopping(BaseException):
    """Raised in the job's thread when the worker is asked to stop mid-job. A BaseException,
    so the ``except Exception`` boundaries of a stage (a delivery attempt, say) let it through
    to run_job, which releases the job instead of recording a failure."""


@dataclass(frozen=True, eq=False)
class JobResult:
    """A done job's result, as the job table keeps it and GET /ai/jobs and the console show it."""

    pipeline: Pipeline
    source_series_instance_uid: str
    #: instances of the series the job read (intake compares it with the series later: see
    #: node.intake.handoff), and how many of them were localizers left out of the volume
    source_instances: int
    localizers: int
    series: SeriesResult
    deliveries: Sequence[Delivery]
    #: SOP Instance UID -> Orthanc id, for the objects this Orthanc stored
    locations: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "pipeline": {"name": self.pipeline.name, "version": self.pipeline.version},
            "source_series_instance_uid": self.source_series_instance_uid,
            "source_instances": self.source_instances,
            "localizers_left_out": self.localizers,
            "segments": [m.to_json() for m in self.series.measurements],
        }
        for obj in self.series.objects:
            # One entry per kind; a kind with one object per slice (secondary capture) names
            # its first instance and counts them all.
            entry = result.setdefault(
                obj.kind.value,
                {
                    "sop_instance_uid": str(obj.dataset.SOPInstanceUID),
                    "series_instance_uid": str(obj.dataset.SeriesInstanceUID),
                    "orthanc_id": self.locations.get(str(obj.dataset.SOPInstanceUID)),
                    "instances": 0,
                },
            )
            entry["instances"] += 1
        result["deliveries"] = [
            {"destination": d.destination, "status": d.status.value, "error": d.last_error}
            for d in self.deliveries
        ]
        return result


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        worker_id: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``clock`` gives the creation time stamped into result objects (tests fix it)."""
        self.settings = settings
        self.clock = clock
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        url = settings.resolved_database_url
        migrate(url)
        self.store = JobStore(create_engine_for(url))
        self.orthanc = OrthancClient.for_node(settings)
        self.registry = PipelineRegistry.from_settings(settings)
        self.pipelines = WarmPipelines(self.registry, runtime=runtime_resolver(settings))
        #: the pipelines whose jobs this worker claims (None: any); see claimable_pipelines
        self.claims = claimable_pipelines(self.registry, settings)
        self.sender = DeliverySender(
            worker_id=self.worker_id,
            jobs=self.store,
            deliveries=DeliveryStore(self.store.engine),
            config=ConfigStore(
                self.store.engine, secrets=SecretBox.from_key_file(settings.resolved_secrets_key_file)
            ),
            files=result_store(settings, self.store.engine),
            orthanc=self.orthanc,
            retry=settings.delivery,
            lease_seconds=settings.worker.lease.total_seconds(),
        )
        self.device = DeviceInfo.for_node(device_serial_number=settings.orthanc.aet)
        self.stopping = threading.Event()
        self.busy = False

    # -- the loop -------------------------------------------------------------------------
    def run_forever(self) -> None:
        log.info("worker %s started; pipelines: %s", self.worker_id, ", ".join(self.registry.names()))
        poll = self.settings.worker.poll_interval.total_seconds()
        reported = 0.0
        while not self.stopping.is_set():
            if time.monotonic() - reported > REPORT_EVERY:
                self.report()
                reported = time.monotonic()
            try:
                worked = self.run_one()
            except SQLAlchemyError as error:
                # the job database locked or unreachable: nothing to claim or record until it is
                # back, and a worker that crashed on it would only be restarted into the same wait
                log.warning(
                    "the job database did not answer (%s); waiting %.0f s",
                    error.__class__.__name__,
                    DATABASE_PAUSE,
                )
                self.stopping.wait(DATABASE_PAUSE)
                continue
            if not worked:
                self.stopping.wait(poll)
        log.info("worker %s stopped", self.worker_id)

    def run_one(self) -> bool:
        """Send one due delivery, or claim and run one job; False when there was nothing to do.

        Deliveries first: they are short, and a destination that came back should get its
        results before the next model run."""
        delivered = self.sender.send_due()
        # one delivery per turn, then a job: a crowd of deliveries to a dead peer, each failing
        # after its timeout, must not keep the models waiting
        job = self.store.claim(
            worker_id=self.worker_id,
            lease_seconds=self.settings.worker.lease.total_seconds(),
            pipelines=self.claims,
        )
        if job is None:
            return delivered
        self.run_job(job)
        return True

    def report(self) -> None:
        """Tell the console which pipelines this worker holds in memory (warm) and for which
        it claims jobs; read by GET /ai/pipelines."""
        state = {
            "loaded": self.pipelines.loaded(),
            "claims": None if self.claims is None else sorted(self.claims),
        }
        try:
            self.store.set_state(f"{WORKER_STATE_PREFIX}{self.worker_id}", json.dumps(state))
        except Exception:  # a busy database must not stop the worker; the next report catches up
            log.warning("worker %s could not report its state", self.worker_id, exc_info=True)

    def install_signal_handlers(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            self.stopping.set()
            if self.busy:
                raise WorkerStopping(f"worker stopped by signal {signum}")

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    # -- one job --------------------------------------------------------------------------
    def run_job(self, job: Job) -> None:
        timer = StageTimer()
        lease_lost = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(job, lease_lost), daemon=True)
        context = job_context(job)
        self.busy = True
        heartbeat.start()
        log.info("job %s started (attempt %s)", job.id, job.attempts, extra=context)
        try:
            result = self._process(job, timer)
            self.store.complete(job.id, self.worker_id, result=result.to_json(), stage_timings=timer.seconds)
            self.report()
            log.info("job %s done in %.1f s", job.id, sum(timer.seconds.values()), extra=context)
        except WorkerStopping:
            self.store.release(job.id, self.worker_id)
            log.info("job %s released: worker stopping", job.id, extra=context)
        except LeaseLostError:
            log.warning("job %s: lease lost to another worker; its result is theirs", job.id, extra=context)
        except PipelineTimeoutError as error:
            # The pipeline's thread cannot be stopped and still holds the model, the CPU or the
            # GPU: record the failure, then end this process; the supervisor starts a fresh
            # worker (docs/pipelines.md, "Failures and time limits").
            self._fail(job, str(error), timer)
            exit_worker()
        except OrthancError as error:
            if error.not_found:
                self._fail(job, str(error), timer)
            else:
                # Orthanc did not answer even after the client's retries (restarting, or down):
                # not the job's fault. It goes back to the queue, the attempt uncounted, and
                # this worker waits before it claims again.
                self.store.release(job.id, self.worker_id)
                log.warning(
                    "job %s released: %s; this worker waits %.0f s",
                    job.id,
                    error,
                    ORTHANC_DOWN_PAUSE,
                    extra=context,
                )
                self.stopping.wait(ORTHANC_DOWN_PAUSE)
        except NodeError as error:
            self._fail(job, str(error), timer)
        except MemoryError:
            # outside the model (fetching, building the volume or the results): the series is too
            # large for this worker's memory; the traceback says where
            self._fail(
                job,
                "the worker ran out of memory while processing the series; give the worker more "
                "memory, or leave series this large to another node (a rule on the number of slices)",
                timer,
                unexpected=True,
            )
        except Exception as error:  # the job loop is the boundary: one job fails, the worker lives
            self._fail(
                job,
                f"internal error in the node ({type(error).__name__}: {error}); see the worker log",
                timer,
                unexpected=True,
            )
        finally:
            self.busy = False
            lease_lost.set()  # also stops the heartbeat thread
            heartbeat.join()

    def _fail(self, job: Job, message: str, timer: StageTimer, *, unexpected: bool = False) -> None:
        """Record the failure; the one log line of it (with the traceback when unexpected)."""
        context = job_context(job)
        if unexpected:
            log.error("job %s failed: %s", job.id, message, exc_info=True, extra=context)
        else:
            log.warning("job %s failed: %s", job.id, message, extra=context)
        try:
            self.store.fail(job.id, self.worker_id, error=message, stage_timings=timer.seconds)
        except LeaseLostError:
            log.warning("job %s: lease lost before its failure could be recorded", job.id, extra=context)

    def _heartbeat(self, job: Job, done: threading.Event) -> None:
        lease = self.settings.worker.lease.total_seconds()
        while not done.wait(lease / 3):
            try:
                kept = self.store.heartbeat(job.id, self.worker_id, lease)
            except SQLAlchemyError as error:
                # keep beating: if the database is back before the lease ends, nothing is lost
                log.warning(
                    "job %s: heartbeat not recorded (%s)",
                    job.id,
                    type(error).__name__,
                    extra=job_context(job),
                )
                continue
            if not kept:
                log.warning("job %s: lease lost", job.id, extra=job_context(job))
                return

    def _process(self, job: Job, timer: StageTimer) -> JobResult:
        pipeline_class = self.registry.get(job.pipeline_name)
        if pipeline_class.version != job.pipeline_version:
            raise PipelineError(
                f"job was queued for {job.pipeline_name} {job.pipeline_version} but this node has "
                f"version {pipeline_class.version}; re-run the study to use it"
            )
        own = self.settings.for_pipeline(job.pipeline_name)
        with timer.stage("load"):
            pipeline = self.pipelines.get(job.pipeline_name)
        with timer.stage("fetch"):
            failpoint("fetch")
            datasets = self.fetch_input(job, pipeline)
        with timer.stage("volume"):
            volume = build_volume(datasets)
        if volume.localizer_instance_uids:
            log.info(
                "job %s: %s of series %s left out of the volume (Image Type LOCALIZER)",
                job.id,
                count_text(len(volume.localizer_instance_uids), "localizer"),
                volume.series_instance_uid,
                extra=job_context(job),
            )
        series = process_series(
            volume,
            pipeline,
            datasets,
            kinds=own.results,
            seg_type=own.seg_type,
            identity=ResultIdentity.for_job(job.uid, self.clock()),
            device=self.device,
            time_limit=own.time_limit,
            timer=timer,
        )
        for warning in series.warnings:
            log.info("job %s: validator warning on %s", job.id, warning, extra=job_context(job))
        with timer.stage("stage"):
            self.sender.files.write(job.uid, series.objects)
        with timer.stage("deliver"):
            deliveries, locations = self._deliver(job)
        return JobResult(
            pipeline=pipeline,
            source_series_instance_uid=volume.series_instance_uid,
            source_instances=len(datasets),
            localizers=len(volume.localizer_instance_uids),
            series=series,
            deliveries=deliveries,
            locations=locations,
        )

    def fetch_input(self, job: Job, pipeline: Pipeline) -> list[Dataset]:
        """The instances of the series the job runs on, from this node's Orthanc."""
        return fetch_series(
            self.orthanc,
            study_id=job.orthanc_study_id,
            series_instance_uid=job.series_instance_uid,
            criteria=pipeline.accepts,
            threads=self.settings.worker.fetch_threads,
        )

    def _deliver(self, job: Job) -> tuple[list[Delivery], dict[str, str]]:
        """A delivery per destination of the job, each tried once now; failures are retried
        later by whichever worker is free (node.delivery.sender). Returns the deliveries and,
        for this Orthanc, where each SOP Instance UID is stored."""
        failpoint("deliver")
        self._require_study(job)
        # read again: a rule matched after the job was queued may have added destinations
        destinations = self.store.get(job.id).destinations
        created = self.sender.deliveries.create_for_job(
            job.id, list(destinations), max_attempts=self.settings.delivery.max_attempts
        )
        deliveries = []
        locations: dict[str, str] = {}
        # this Orthanc first: the radiologist's copy must not wait on a remote peer's timeout
        for delivery in sorted(created, key=lambda d: d.destination != THIS_ORTHANC):
            if delivery.status is DeliveryStatus.PENDING:
                delivery, sent = self.sender.send_now(delivery)
                if delivery.destination == THIS_ORTHANC:
                    locations.update((item.sop_instance_uid, item.location) for item in sent)
            deliveries.append(delivery)
        if all(d.status is DeliveryStatus.DELIVERED for d in deliveries):
            # a job run again after its worker died finds its deliveries done already
            self.sender.files.remove(job.uid)
        return deliveries, locations

    def _require_study(self, job: Job) -> None:
        """Refuse to deliver the results of a study deleted while its job ran: storing them would
        bring the study back into Orthanc with nothing in it but the node's objects, and the
        deletion says the admin wanted it gone (the wrong patient, say)."""
        if not self.study_in_orthanc(job):
            raise InputStudyError(
                "the study was deleted from Orthanc while the job ran; its results were not "
                "stored or sent anywhere"
            )

    def study_in_orthanc(self, job: Job) -> bool:
        """Whether the job's study is still in this node's Orthanc."""
        try:
            self.orthanc.get_json(f"/studies/{job.orthanc_study_id}")
        except OrthancError as error:
            if error.not_found:
                return False
            raise
        return True


def main(settings: Settings) -> None:
    worker = Worker(settings)
    worker.install_signal_handlers()
    try:
        worker.run_forever()
    except WorkerStopping:
        pass
