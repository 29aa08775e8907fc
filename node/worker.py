"""`ai-node worker`: claims jobs from the database and runs them, one at a time.

Each job goes through the same stages, each timed: fetch the chosen series from Orthanc,
build the volume, run the pipeline, measure, build the SEG and SR, validate them, store them
into the study. Any failure fails only that job, with a message for the PACS admin.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from node.config import Settings
from node.delivery.sender import DeliverySender
from node.errors import NodeError, NoMatchingSeriesError, PipelineError
from node.run.execution import (
    PipelineTimeoutError,
    claimable_pipelines,
    exit_worker,
    run_pipeline,
    runtime_resolver,
)
from node.imaging.series import build_volume, select_series
from node.db.config_store import ConfigStore
from node.db.database import create_engine_for, migrate
from node.delivery.queue import Delivery, DeliveryStore
from node.db.errors import LeaseLostError
from node.db.models import DeliveryStatus
from node.db.jobs import WORKER_STATE_PREFIX, Job, JobStore
from node.orthanc.client import OrthancClient
from node.orthanc.study import summarize_study
from node.results.measure import SegmentMeasurements, measure_segments
from node.results.products import ResultInputs, ResultObject, build_result_objects
from node.results.seg import DeviceInfo
from node.delivery.staging import ResultFiles
from node.results.validate import require_valid
from node.rules.model import THIS_ORTHANC
from node.timing import StageTimer
from node.pipeline.base import Pipeline
from node.pipeline.registry import PipelineRegistry, WarmPipelines

log = logging.getLogger(__name__)

#: how often (seconds) a worker reports itself under node_state "worker:<id>" (read by
#: node.web.api, which considers a worker silent for WORKER_SILENCE gone)
REPORT_EVERY = 10.0


class WorkerStopping(BaseException):
    """Raised in the job's thread when the worker is asked to stop mid-job. A BaseException,
    so the ``except Exception`` boundaries of a stage (a delivery attempt, say) let it through
    to run_job, which releases the job instead of recording a failure."""


def result_uid(job: Job, purpose: str) -> str:
    """A UID derived from the job, so a job run twice (after a crash) writes the same objects.

    PS3.5 B.2: a UUID as the integer under the 2.25 root.
    """
    return f"2.25.{uuid.uuid5(uuid.UUID(job.uid), purpose).int}"


def job_result(
    pipeline: Pipeline,
    source_series_instance_uid: str,
    measurements: Sequence[SegmentMeasurements],
    objects: Sequence[ResultObject],
    *,
    locations: Mapping[str, str],
    deliveries: Sequence[Delivery],
) -> dict[str, Any]:
    """A done job's ``result``, as GET /ai/jobs and the console show it.

    ``locations`` maps a SOP Instance UID to its Orthanc id, for objects this Orthanc stored.
    """
    result: dict[str, Any] = {
        "pipeline": {"name": pipeline.name, "version": pipeline.version},
        "source_series_instance_uid": source_series_instance_uid,
        "segments": [m.to_json() for m in measurements],
    }
    for obj in objects:
        # One entry per kind; a kind with one object per slice (secondary capture) names its
        # first instance and counts them all.
        entry = result.setdefault(
            obj.kind.lower(),
            {
                "sop_instance_uid": str(obj.dataset.SOPInstanceUID),
                "series_instance_uid": str(obj.dataset.SeriesInstanceUID),
                "orthanc_id": locations.get(str(obj.dataset.SOPInstanceUID)),
                "instances": 0,
            },
        )
        entry["instances"] += 1
    result["deliveries"] = [
        {"destination": d.destination, "status": d.status.value, "error": d.last_error} for d in deliveries
    ]
    return result


class Worker:
    def __init__(self, settings: Settings, *, worker_id: str | None = None) -> None:
        self.settings = settings
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
            config=ConfigStore(self.store.engine),
            files=ResultFiles(settings.resolved_data_dir / "results"),
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
            if not self.run_one():
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
        self.busy = True
        heartbeat.start()
        log.info(
            "job %s: %s on study %s (attempt %s)",
            job.id,
            job.pipeline_name,
            job.study_instance_uid,
            job.attempts,
        )
        try:
            result = self._process(job, timer)
            self.store.complete(job.id, self.worker_id, result=result, stage_timings=timer.seconds)
            self.report()
            log.info("job %s done in %.1f s", job.id, sum(timer.seconds.values()))
        except WorkerStopping:
            self.store.release(job.id, self.worker_id)
            log.info("job %s released: worker stopping", job.id)
        except LeaseLostError:
            log.warning("job %s: lease lost to another worker; its result is theirs", job.id)
        except NodeError as error:
            self._fail(job, str(error), timer)
        except Exception as error:  # the job loop is the boundary: one job fails, the worker lives
            log.error("job %s: unexpected error\n%s", job.id, traceback.format_exc())
            self._fail(
                job,
                f"internal error in the node ({type(error).__name__}: {error}); see the worker log",
                timer,
            )
        finally:
            self.busy = False
            lease_lost.set()  # also stops the heartbeat thread
            heartbeat.join()

    def _fail(self, job: Job, message: str, timer: StageTimer) -> None:
        log.warning("job %s failed: %s", job.id, message)
        try:
            self.store.fail(job.id, self.worker_id, error=message, stage_timings=timer.seconds)
        except LeaseLostError:
            log.warning("job %s: lease lost before its failure could be recorded", job.id)

    def _heartbeat(self, job: Job, done: threading.Event) -> None:
        lease = self.settings.worker.lease.total_seconds()
        while not done.wait(lease / 3):
            if not self.store.heartbeat(job.id, self.worker_id, lease):
                log.warning("job %s: lease lost", job.id)
                return

    def _process(self, job: Job, timer: StageTimer) -> dict[str, Any]:
        pipeline_class = self.registry.get(job.pipeline_name)
        if pipeline_class.version != job.pipeline_version:
            raise PipelineError(
                f"job was queued for {job.pipeline_name} {job.pipeline_version} but this node has "
                f"version {pipeline_class.version}; re-run the study to use it"
            )
        with timer.stage("load"):
            pipeline = self.pipelines.get(job.pipeline_name)
        with timer.stage("fetch"):
            datasets = self._fetch_input(job, pipeline)
        with timer.stage("volume"):
            volume = build_volume(datasets)
        with timer.stage("pipeline"):
            try:
                output = run_pipeline(
                    pipeline, volume, time_limit=self.settings.for_pipeline(pipeline.name).time_limit
                )
            except PipelineTimeoutError as error:
                # The pipeline's thread cannot be stopped and still holds the model, the CPU or
                # the GPU: record the failure, then end this process; the supervisor starts a
                # fresh worker (docs/pipelines.md, "Failures and time limits").
                self._fail(job, str(error), timer)
                exit_worker()
        with timer.stage("measure"):
            measurements = measure_segments(volume, pipeline.segments, output)
        inputs = ResultInputs(
            source_images=datasets,
            volume=volume,
            pipeline=pipeline,
            output=output,
            measurements=measurements,
            device=self.device,
        )
        objects = build_result_objects(
            inputs,
            kinds=self.settings.for_pipeline(pipeline.name).results,
            uid=lambda purpose: result_uid(job, purpose),
            timer=timer,
        )
        with timer.stage("validate"):
            # One line per distinct warning: a secondary capture repeats the same one per slice.
            warnings = Counter(
                (obj.kind, warning)
                for obj in objects
                for warning in require_valid(obj.dataset, obj.kind).warnings
            )
            for (kind, warning), times in warnings.items():
                log.info("job %s: %s validator warning (%d objects): %s", job.id, kind, times, warning)
        with timer.stage("stage"):
            self.sender.files.write(job.uid, [obj.dataset for obj in objects])
        with timer.stage("deliver"):
            deliveries, locations = self._deliver(job)
        return job_result(
            pipeline,
            volume.series_instance_uid,
            measurements,
            objects,
            locations=locations,
            deliveries=deliveries,
        )

    def _deliver(self, job: Job) -> tuple[list[Delivery], dict[str, str]]:
        """A delivery per destination of the job, each tried once now; failures are retried
        later by whichever worker is free (node.delivery.sender). Returns the deliveries and,
        for this Orthanc, where each SOP Instance UID is stored."""
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

    def _fetch_input(self, job: Job, pipeline: Pipeline) -> list[Dataset]:
        study = summarize_study(self.orthanc.get_json, job.orthanc_study_id)
        inputs = study.input_series()
        if job.series_instance_uid is not None:
            # the series the routing rule chose when the job was queued
            routed = [s for s in inputs if s.summary.series_instance_uid == job.series_instance_uid]
            if not routed:
                raise NoMatchingSeriesError(
                    f"series {job.series_instance_uid}, chosen when the job was queued, is no "
                    "longer in the study (deleted?); re-run the study to route it again"
                )
            inputs = routed
        chosen = select_series([series.summary for series in inputs], pipeline.accepts)
        series = next(s for s in inputs if s.summary.series_instance_uid == chosen.series_instance_uid)
        instance_ids = self.orthanc.get_json(f"/series/{series.orthanc_id}")["Instances"]
        with ThreadPoolExecutor(self.settings.worker.fetch_threads) as pool:
            files = list(pool.map(self.orthanc.instance_file, instance_ids))
        return [pydicom.dcmread(io.BytesIO(data)) for data in files]


def main(settings: Settings) -> None:
    worker = Worker(settings)
    worker.install_signal_handlers()
    try:
        worker.run_forever()
    except WorkerStopping:
        pass
