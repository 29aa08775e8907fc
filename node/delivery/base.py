"""The interface every destination implements, and the factory from configuration.

A destination sends a job's result datasets and can test its connection. ``send`` either
delivers every dataset or raises :class:`~node.errors.DeliveryError` with a message an admin can
act on; sending the same SOP Instance UIDs again is harmless, so a failed delivery is simply
retried (see :mod:`node.delivery.retry`). ``test`` never raises for a failure of the peer:
it reports it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from node.delivery.config import DestinationConfig, DicomConfig, DicomWebConfig, ThisOrthancConfig
from node.orthanc.client import OrthancClient

__all__ = ["Delivered", "Destination", "TestOutcome", "from_config"]


@dataclass(frozen=True)
class Delivered:
    """One dataset a destination accepted."""

    sop_instance_uid: str
    #: where the destination keeps it (an Orthanc instance id for this Orthanc)
    location: str
    #: the destination had it already (a job re-run after its worker died sends it again)
    already_present: bool


@dataclass(frozen=True)
class TestOutcome:
    """What a destination's Test action found: ``ok``, and what happened in words."""

    __test__ = False  # not a pytest test class

    ok: bool
    message: str


class Destination(ABC):
    name: str

    @abstractmethod
    def send(self, datasets: Sequence[Dataset]) -> list[Delivered]:
        """Deliver every dataset or raise DeliveryError; re-sending the same UIDs is harmless."""

    @abstractmethod
    def test(self) -> TestOutcome:
        """Check that the destination answers (C-ECHO, a QIDO query...); report, don't raise."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def from_config(config: DestinationConfig, orthanc_client: OrthancClient) -> Destination:
    """The destination a configuration describes; ``orthanc_client`` serves ``this-orthanc``."""
    # Imported here: the implementations import this module for the base class.
    from node.delivery.dicom import DicomDestination
    from node.delivery.dicomweb import DicomWebDestination
    from node.delivery.this_orthanc import ThisOrthancDestination

    if isinstance(config, ThisOrthancConfig):
        return ThisOrthancDestination(config, orthanc_client)
    if isinstance(config, DicomConfig):
        return DicomDestination(config)
    if isinstance(config, DicomWebConfig):
        return DicomWebDestination(config)
    raise TypeError(f"no destination for configuration type {type(config).__name__}")
