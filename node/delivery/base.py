"""The interface every destination implements (the kinds and their factory: :mod:`node.delivery.kinds`).

A destination sends a job's result datasets and can test its connection. ``send`` either
delivers every dataset or raises :class:`~node.errors.DeliveryError` with a message an admin can
act on; sending the same SOP Instance UIDs again is harmless, so a failed delivery is simply
retried (see :mod:`node.support.retry`). ``test`` never raises for a failure of the peer:
it reports it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

__all__ = ["Delivered", "Destination", "TestOutcome"]


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
