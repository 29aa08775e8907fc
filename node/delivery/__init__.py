"""Where results go: this Orthanc, a DICOM node (C-STORE) or a DICOMweb server (STOW-RS).

See ../../shared/STYLE.md, rule 13: one small base class, one discriminated config type each.
The kinds and their factory are in :mod:`node.delivery.kinds` (not imported here: it pulls in
pynetdicom and dicomweb-client).
"""

from node.delivery.base import Delivered, Destination, TestOutcome
from node.delivery.config import (
    DestinationConfig,
    DicomConfig,
    DicomWebConfig,
    ThisOrthancConfig,
)

__all__ = [
    "Delivered",
    "Destination",
    "DestinationConfig",
    "DicomConfig",
    "DicomWebConfig",
    "TestOutcome",
    "ThisOrthancConfig",
]
