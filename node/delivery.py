"""Where results go. Today: back into the study in this node's Orthanc.

Destinations share one small interface so DICOM C-STORE and DICOMweb STOW-RS targets can be
added beside this one (see ../shared/STYLE.md, rule 13).
"""

from __future__ import annotations

import io
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from node.orthanc.client import OrthancClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivered:
    sop_instance_uid: str
    #: where the destination keeps it (an Orthanc instance id for this Orthanc)
    location: str
    already_present: bool


class Destination(ABC):
    name: str

    @abstractmethod
    def send(self, datasets: Sequence[Dataset]) -> list[Delivered]:
        """Deliver every dataset or raise DeliveryError; re-sending the same UIDs is harmless."""


def part10_bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


class ThisOrthanc(Destination):
    """Store results into the node's own Orthanc, next to the source study."""

    name = "this-orthanc"

    def __init__(self, client: OrthancClient) -> None:
        self.client = client

    def send(self, datasets: Sequence[Dataset]) -> list[Delivered]:
        delivered = []
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
