"""The default destination: results stored back into the study in the node's own Orthanc."""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

from node.delivery import Delivered, ThisOrthanc
from node.destinations.base import Destination, TestOutcome
from node.destinations.config import ThisOrthancConfig
from node.errors import OrthancError
from node.orthanc.client import OrthancClient


class ThisOrthancDestination(Destination):
    def __init__(self, config: ThisOrthancConfig, client: OrthancClient) -> None:
        self.name = config.name
        self.config = config
        self._store = ThisOrthanc(client)

    def send(self, datasets: Sequence[Dataset]) -> list[Delivered]:
        return self._store.send(datasets)

    def test(self) -> TestOutcome:
        client = self._store.client
        try:
            system = client.get_json("/system")
        except OrthancError as error:
            return TestOutcome(ok=False, message=str(error))
        version = system.get("Version", "(unknown version)")
        return TestOutcome(ok=True, message=f"Orthanc {version} at {client.base_url} answers")
