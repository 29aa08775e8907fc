"""What makes a run's result objects exactly what they are, besides the input.

A job derives every UID of its objects from its own uid (PS3.5 B.2: a UUID under ``2.25``), so
a job run again after its worker died writes the same objects, which Orthanc and the peers keep
once; and it stamps them with one creation time. The same input with the same identity gives
byte-identical objects, whichever entry point (worker, ``ai-node pipelines run``) built them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM


@dataclass(frozen=True)
class ResultIdentity:
    #: the UUID every result UID derives from: the job's uid
    root: uuid.UUID
    #: when the objects were made: Content, Instance Creation and Contribution Date/Time
    created: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.created.tzinfo is None:
            raise ValueError(f"ResultIdentity created {self.created.isoformat()} has no time zone")

    @classmethod
    def for_job(cls, job_uid: str, created: datetime | None = None) -> ResultIdentity:
        return cls(uuid.UUID(job_uid), created or datetime.now(UTC))

    @classmethod
    def new(cls) -> ResultIdentity:
        """A fresh identity, for a run that is no job's (``ai-node pipelines run``, benchmarks)."""
        return cls(uuid.uuid4())

    def uid(self, purpose: str) -> str:
        """The UID of one part of the results (``"seg-instance"``, ``"sr-series"``...)."""
        return f"2.25.{uuid.uuid5(self.root, purpose).int}"

    def stamp(self, dataset: Dataset) -> None:
        """Put :attr:`created` wherever highdicom wrote the time it ran.

        DICOM times are local to the creator (PS3.3 C.12.1.1.1); the node writes them in UTC
        and says so in Timezone Offset From UTC.
        """
        moment = self.created.astimezone(UTC)
        date, time = DA(moment.date()), TM(moment.time())
        dataset.InstanceCreationDate, dataset.InstanceCreationTime = date, time
        if "ContentDate" in dataset:
            dataset.ContentDate, dataset.ContentTime = date, time
        if "SeriesDate" in dataset:
            dataset.SeriesDate, dataset.SeriesTime = date, time
        dataset.TimezoneOffsetFromUTC = "+0000"
        for item in dataset.get("ContributingEquipmentSequence", []):
            if "ContributionDateTime" in item:
                item.ContributionDateTime = DT(moment)
