"""The destination kinds, and the one place that makes a destination from its configuration.

Beside the kinds rather than in :mod:`node.delivery.base`, which they import for the base class.
Importing this module imports pynetdicom and dicomweb-client: the Orthanc plugin imports it only
when an admin presses Test.
"""

from __future__ import annotations

from node.delivery.base import Destination
from node.delivery.config import DestinationConfig, DicomConfig, DicomWebConfig, ThisOrthancConfig
from node.delivery.dicom import DicomDestination
from node.delivery.dicomweb import DicomWebDestination
from node.delivery.this_orthanc import ThisOrthancDestination
from node.orthanc.client import OrthancClient


def from_config(config: DestinationConfig, orthanc_client: OrthancClient) -> Destination:
    """The destination a configuration describes; ``orthanc_client`` serves ``this-orthanc``."""
    if isinstance(config, ThisOrthancConfig):
        return ThisOrthancDestination(config, orthanc_client)
    return remote_from_config(config)


def remote_from_config(config: DicomConfig | DicomWebConfig) -> Destination:
    """A destination on another system (DICOM C-STORE or DICOMweb STOW-RS)."""
    if isinstance(config, DicomConfig):
        return DicomDestination(config)
    if isinstance(config, DicomWebConfig):
        return DicomWebDestination(config)
    raise TypeError(f"no destination for configuration type {type(config).__name__}")
