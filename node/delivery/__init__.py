"""Where results go: this Orthanc, a DICOM node (C-STORE) or a DICOMweb server (STOW-RS).

See ../../shared/STYLE.md, rule 13: one small base class, one discriminated config type each.
"""

from node.delivery.base import Delivered, Destination, TestOutcome, from_config
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
    "from_config",
]
