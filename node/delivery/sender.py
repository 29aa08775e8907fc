"""Sending a job's staged results to one destination: one attempt of one delivery.

The destination is looked up by name when the attempt starts, so an admin who fixes a wrong
AE title and presses Retry sends with the corrected settings. A failed attempt is recorded
with the destination's own message and retried later with backoff (Settings.delivery); the
job's staged files are removed once every delivery of the job has succeeded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from pydantic import TypeAdapter, ValidationError

from node import THIS_ORTHANC
from node.config import DeliveryRetrySettings
from node.db.config_store import ConfigStore
from node.db.errors import LeaseLostError
from node.db.jobs import JobStore
from node.db.models import DeliveryStatus
from node.delivery.base import Delivered, Destination
from node.delivery.config import DestinationConfig, ThisOrthancConfig
from node.delivery.kinds import from_config
from node.delivery.queue import Delivery, DeliveryStore
from node.delivery.staging import ResultStore
from node.errors import DeliveryError, NodeError
from node.orthanc.client import OrthancClient
from node.support.retry import next_attempt_delay

log = logging.getLogger(__name__)

_CONFIG = TypeAdapter(DestinationConfig)


class DeliverySender:
    def __init__(
        self,
        *,
        worker_id: str,
        jobs: JobStore,
        deliveries: DeliveryStore,
        config: ConfigStore,
        files: ResultStore,
        orthanc: OrthancClient,
        retry: DeliveryRetrySettings,
        lease_seconds: float,
    ) -> None:
        self.worker_id = worker_id
        self.jobs = jobs
        self.deliveries = deliveries
        self.config = config
        self.files = files
        self.orthanc = orthanc
        self.retry = retry
        self.lease_seconds = lease_seconds

    def destination(self, name: str) -> Destination:
        if name == THIS_ORTHANC:
            return from_config(ThisOrthancConfig(type="this-orthanc"), self.orthanc)
        stored = self.config.get_destination(name)
        if stored is None:
            raise DeliveryError(
                f"destination {name!r} does not exist (deleted or renamed?); create it again "
                "and retry the delivery, or change the rule"
            )
        if stored.unreadable_secrets:
            raise DeliveryError(
                f"destination {name!r}: its {', '.join(stored.unreadable_secrets)} cannot be "
                "decrypted with this node's secrets key (the key file was lost or replaced); "
                "enter it again in the destination, then retry the delivery"
            )
        try:
            config = _CONFIG.validate_python({**stored.document, "type": stored.type, "name": stored.name})
        except ValidationError as error:
            # locations and messages only: pydantic's default text quotes the input, secrets too
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
                for item in error.errors(include_input=False, include_url=False)
            )
            raise DeliveryError(
                f"destination {name!r} has invalid settings ({problems}); correct it"
            ) from None
        return from_config(config, self.orthanc)

    def send_due(self) -> bool:
        """Send the delivery that has been due the longest; False when none is due."""
        delivery = self.deliveries.claim_due(self.worker_id, self.lease_seconds)
        if delivery is None:
            return False
        self.attempt(delivery)
        return True

    def send_now(self, delivery: Delivery) -> tuple[Delivery, list[Delivered]]:
        """Send a pending delivery at once (the job's worker, right after building results)."""
        claimed = self.deliveries.claim(delivery.id, self.worker_id, self.lease_seconds)
        if claimed is None:
            return self.deliveries.get(delivery.id), []
        return self.attempt(claimed)

    def attempt(self, delivery: Delivery) -> tuple[Delivery, list[Delivered]]:
        """One attempt of a delivery this worker has claimed."""
        job = self.jobs.get(delivery.job_id)
        try:
            destination = self.destination(delivery.destination)
            with self._lease_kept(delivery):
                sent = destination.send(self.files.read(job.uid))
        except NodeError as error:
            return self._failed(delivery, str(error)), []
        except Exception as error:  # a destination bug fails this attempt, not the worker
            message = f"internal error ({type(error).__name__}: {error})"
            return self._failed(delivery, message, unexpected=True), []
        try:
            done = self.deliveries.delivered(delivery.id, self.worker_id)
        except LeaseLostError as error:
            log.warning("delivery %s: %s", delivery.id, error, extra=_context(delivery))
            return self.deliveries.get(delivery.id), sent
        log.info(
            "delivery %s: %d objects of job %s sent to %s (attempt %d)",
            delivery.id,
            len(sent),
            job.id,
            delivery.destination,
            delivery.attempts,
            extra=_context(delivery),
        )
        if all(d.status is DeliveryStatus.DELIVERED for d in self.deliveries.for_job(job.id)):
            self.files.remove(job.uid)
        return done, sent

    @contextmanager
    def _lease_kept(self, delivery: Delivery) -> Iterator[None]:
        """Extend the delivery's lease while it is being sent, so a slow peer (a large study
        over a slow link) does not let another worker take it over and send it again."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.lease_seconds / 3):
                if not self.deliveries.heartbeat(delivery.id, self.worker_id, self.lease_seconds):
                    log.warning(
                        "delivery %s: lease lost while sending", delivery.id, extra=_context(delivery)
                    )
                    return

        thread = threading.Thread(target=beat, name=f"delivery-{delivery.id}-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _failed(self, delivery: Delivery, message: str, *, unexpected: bool = False) -> Delivery:
        """Record a failed attempt; the one log line of it (with the traceback when unexpected)."""
        context = _context(delivery)
        try:
            after = self.deliveries.failed_attempt(
                delivery.id, self.worker_id, message, backoff=self._backoff
            )
        except LeaseLostError as error:
            log.warning("delivery %s: %s", delivery.id, error, extra=context)
            return self.deliveries.get(delivery.id)
        if after.status is DeliveryStatus.FAILED:
            log.log(
                logging.ERROR if unexpected else logging.WARNING,
                "delivery %s to %s failed %d times; it stays failed until retried: %s",
                delivery.id,
                delivery.destination,
                after.attempts,
                message,
                exc_info=unexpected,
                extra=context,
            )
        else:
            log.log(
                logging.ERROR if unexpected else logging.INFO,
                "delivery %s to %s failed (attempt %d of %d), next try at %s: %s",
                delivery.id,
                delivery.destination,
                after.attempts,
                after.max_attempts,
                after.next_attempt_at.isoformat(timespec="seconds"),
                message,
                exc_info=unexpected,
                extra=context,
            )
        return after

    def _backoff(self, attempt: int) -> timedelta:
        return next_attempt_delay(
            attempt, base=self.retry.base_delay, factor=self.retry.factor, cap=self.retry.max_delay
        )


def _context(delivery: Delivery) -> dict[str, object]:
    return {"delivery_id": delivery.id, "destination": delivery.destination, "job_id": delivery.job_id}
