"""One delivery attempt over a real SQLite job database: staged files, leases, failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from cryptography.fernet import Fernet
from pydicom.dataset import Dataset
from sqlalchemy import Engine

from node.config import DeliveryRetrySettings, ResultKind
from node.db.config_store import ConfigStore
from node.db.jobs import JobStore, JobTrigger
from node.db.models import DeliveryStatus
from node.db.secrets import SecretBox
from node.delivery.base import Delivered, Destination, TestOutcome
from node.delivery.queue import DeliveryStore
from node.delivery.sender import DeliverySender
from node.delivery.staging import ResultFiles
from node.errors import DeliveryError
from node.orthanc.client import OrthancClient
from node.results.part10 import ResultObject
from tests.factories import make_series


class SlowPeer(Destination):
    name = "slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.sent: list[str] = []

    def send(self, datasets: Sequence[Dataset]) -> list[Delivered]:
        time.sleep(self.seconds)
        self.sent += [str(ds.SOPInstanceUID) for ds in datasets]
        return [Delivered(str(ds.SOPInstanceUID), "peer", False) for ds in datasets]

    def test(self) -> TestOutcome:
        return TestOutcome(True, "fine")


@pytest.fixture
def sender(engine: Engine, tmp_path: Path, secret_box: SecretBox) -> DeliverySender:
    return DeliverySender(
        worker_id="w1",
        jobs=JobStore(engine),
        deliveries=DeliveryStore(engine),
        config=ConfigStore(engine, secrets=secret_box),
        files=ResultFiles(tmp_path / "results"),
        orthanc=OrthancClient("http://127.0.0.1:1"),
        retry=DeliveryRetrySettings(),
        lease_seconds=0.6,
    )


def staged_job(sender: DeliverySender) -> tuple[int, list[Dataset]]:
    job = sender.jobs.enqueue(
        orthanc_study_id="s",
        study_instance_uid="1.2.3",
        pipeline_name="p",
        pipeline_version="1",
        trigger=JobTrigger.MANUAL,
    )
    assert job is not None
    datasets = make_series(np.zeros((2, 4, 4), dtype=np.int16))
    # staged as the worker stages its objects (the series stands in for results here)
    sender.files.write(job.uid, [ResultObject(ResultKind.SEG, ds) for ds in datasets])
    return job.id, datasets


def test_a_slow_send_keeps_its_lease_so_no_other_worker_sends_it_again(sender: DeliverySender) -> None:
    job_id, datasets = staged_job(sender)
    peer = SlowPeer(seconds=1.5)  # more than twice the lease
    sender.destination = lambda name: peer  # type: ignore[method-assign]
    (delivery,) = sender.deliveries.create_for_job(job_id, ["slow"])
    claimed = sender.deliveries.claim(delivery.id, "w1", 0.6)
    assert claimed is not None
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(sender.attempt(claimed)))
    thread.start()
    time.sleep(1.0)
    assert sender.deliveries.claim_due("w2", 0.6) is None  # still held by w1
    thread.join()
    done, sent = result[0]  # type: ignore[misc]
    assert done.status is DeliveryStatus.DELIVERED
    assert peer.sent == [str(ds.SOPInstanceUID) for ds in datasets]
    job = sender.jobs.get(job_id)
    assert not sender.files.folder(job.uid).exists()  # every delivery done: staged files gone


def test_invalid_stored_settings_are_named_without_their_secrets(sender: DeliverySender) -> None:
    sender.config.save_destination(
        "broken", "dicomweb", {"auth": {"type": "bearer", "token": "SECRET-TOKEN-123"}}, actor="test"
    )
    with pytest.raises(DeliveryError) as raised:
        sender.destination("broken")
    assert "url: Field required" in str(raised.value)
    assert "SECRET" not in str(raised.value)


def test_a_secret_sealed_with_a_lost_key_fails_the_attempt_with_what_to_do(
    sender: DeliverySender, engine: Engine
) -> None:
    document = {
        "url": "https://pacs.example/dicom-web",
        "auth": {"type": "basic", "username": "ai", "password": "SECRET-PW-123"},
    }
    other_key = SecretBox(Fernet.generate_key())
    ConfigStore(engine, secrets=other_key).save_destination("archive", "dicomweb", document, actor="test")
    with pytest.raises(DeliveryError, match=r"'archive': its auth.password cannot be decrypted") as raised:
        sender.destination("archive")
    assert "enter it again in the destination" in str(raised.value)


def test_a_deleted_destination_fails_the_attempt_with_what_to_do(sender: DeliverySender) -> None:
    job_id, _ = staged_job(sender)
    (delivery,) = sender.deliveries.create_for_job(job_id, ["gone"], max_attempts=1)
    after, sent = sender.send_now(delivery)
    assert (after.status, sent) == (DeliveryStatus.FAILED, [])
    assert "destination 'gone' does not exist" in (after.last_error or "")
