"""The default destination: results stored back into the study in the node's own Orthanc."""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

from node.delivery.base import Delivered, Destination, TestOutcome
from node.delivery.config import ThisOrthancConfig
from node.errors import OrthancError
from node.orthanc.client import OrthancClient
from node.results.part10 import part10_bytes
from node.support.failpoints import failpoint


class ThisOrthancDestination(Destination):
    def __init__(self, config: ThisOrthancConfig, client: OrthancClient) -> None:
        self.name = config.name
        self.config = config
        self.client = client

    def send(self, datasets: Sequence[Dataset]) -> list[Delivered]:
        delivered = []
        failpoint("store")
        for dataset in datasets:
            answer = self.client.store_instance(part10_bytes(dataset))
            # A worker that died after storing and was replaced re-sends the same SOP Instance
            # UID; Orthanc keeps the first copy (OverwriteInstances is false) and says so.
            delivered.append(
                Delivered(
                    sop_instance_uid=str(dataset.SOPInstanceUID),
                    location=answer["ID"],
                    already_present=answer.get("Status") == "AlreadyStored",
                )
            )
        return delivered

    def test(self) -> TestOutcome:
        try:
            system = self.client.get_json("/system")
        except OrthancError as error:
            return TestOutcome(ok=False, message=str(error))
        version = system.get("Version", "(unknown version)")
        return TestOutcome(ok=True, message=f"Orthanc {version} at {self.client.base_url} answers")
