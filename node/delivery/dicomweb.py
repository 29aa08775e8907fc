"""A DICOMweb server as destination: STOW-RS with dicomweb-client, QIDO-RS to test it.

Authentication travels on a ``requests.Session`` (basic, or a bearer token header); neither
appears in messages, logs or the object's repr.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from node.delivery.base import Delivered, Destination, TestOutcome
from node.delivery.config import BasicAuth, BearerAuth, DicomWebConfig
from node.delivery.dicom import store_status_problem
from node.delivery.transcode import transcoded
from node.errors import DeliveryError

log = logging.getLogger(__name__)

#: how much of an error response's body a message quotes
_BODY_EXCERPT = 300


class DicomWebDestination(Destination):
    def __init__(self, config: DicomWebConfig) -> None:
        self.name = config.name
        self.config = config
        session = requests.Session()
        if isinstance(config.auth, BasicAuth):
            session.auth = (config.auth.username, config.auth.password.get_secret_value())
        elif isinstance(config.auth, BearerAuth):
            session.headers["Authorization"] = f"Bearer {config.auth.token.get_secret_value()}"
        self._client = DICOMwebClient(url=config.url, session=session, timeout=config.timeout.total_seconds())
        # Its own retries (5 attempts over 30 s, on any connection error) would hold a worker
        # while a server is down; the delivery step's backoff schedule retries instead.
        self._client.set_http_retry_params(retry=False)

    def send(self, datasets: Sequence[Dataset]) -> list[Delivered]:
        if not datasets:
            return []
        try:
            answer = self._client.store_instances(transcoded(datasets, self.config.transfer_syntax))
        except requests.RequestException as error:
            raise DeliveryError(self._problem("STOW-RS", error)) from error
        except ValueError as error:  # a 2xx answer that is not a STOW-RS response
            raise DeliveryError(
                f"DICOMweb server {self.config.url} answered STOW-RS with something that is not "
                f"a store response: {error}"
            ) from error
        failed = [
            f"{item.get('ReferencedSOPInstanceUID', '(no UID)')} "
            f"({_failure_reason(item.get('FailureReason'))})"
            for item in answer.get("FailedSOPSequence", [])
        ]
        if failed:
            raise DeliveryError(
                f"DICOMweb server {self.config.url} refused {len(failed)} of {len(datasets)} "
                f"instances: {'; '.join(failed)}"
            )
        stored = {
            str(item.ReferencedSOPInstanceUID): str(item.get("RetrieveURL") or self.config.url)
            for item in answer.get("ReferencedSOPSequence", [])
            if "ReferencedSOPInstanceUID" in item
        }
        for item in answer.get("ReferencedSOPSequence", []):
            if "WarningReason" in item:
                log.warning(
                    "destination stored with a warning",
                    extra={
                        "destination": self.name,
                        "sop_instance_uid": str(item.get("ReferencedSOPInstanceUID")),
                        "warning_reason": int(item.WarningReason),
                    },
                )
        return [
            Delivered(
                sop_instance_uid=str(dataset.SOPInstanceUID),
                location=stored.get(str(dataset.SOPInstanceUID), self.config.url),
                already_present=False,
            )
            for dataset in datasets
        ]

    def test(self) -> TestOutcome:
        try:
            studies = self._client.search_for_studies(limit=1)
        except requests.RequestException as error:
            return TestOutcome(ok=False, message=self._problem("QIDO-RS", error))
        except ValueError as error:
            return TestOutcome(
                ok=False,
                message=f"DICOMweb server {self.config.url} answered QIDO-RS with something that is "
                f"not a search result: {error}",
            )
        found = "at least one study" if studies else "no study"
        return TestOutcome(ok=True, message=f"QIDO-RS at {self.config.url} answered and found {found}")

    def _problem(self, transaction: str, error: requests.RequestException) -> str:
        response = error.response
        if response is not None:
            body = " ".join(response.text.split())[:_BODY_EXCERPT]
            return (
                f"DICOMweb server {self.config.url} answered {transaction} with HTTP "
                f"{response.status_code} {response.reason}" + (f": {body}" if body else "")
            )
        if isinstance(error, requests.Timeout):
            reason = f"no answer within {self.config.timeout.total_seconds():g} s"
        else:
            reason = _root_cause(error)
        return f"could not reach DICOMweb server {self.config.url} for {transaction}: {reason}"


def _failure_reason(code: object) -> str:
    if code is None:
        return "no failure reason given"
    value = int(str(code))
    return f"status 0x{value:04X}, {store_status_problem(value) or 'no failure'}"


def _root_cause(error: BaseException) -> str:
    """The innermost operating-system reason in a requests/urllib3 exception chain."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror.lower() if current.strerror[0].isupper() else current.strerror
        nested = getattr(current, "reason", None)
        if not isinstance(nested, BaseException):
            nested = current.__cause__ or current.__context__
        if nested is None and current.args and isinstance(current.args[0], BaseException):
            nested = current.args[0]
        current = nested
    return str(error)
