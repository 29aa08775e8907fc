"""A DICOM node as destination: C-STORE with pynetdicom, one association per send.

The association offers one presentation context per SOP class of the datasets, with each
dataset's transfer syntax (and both little-endian uncompressed syntaxes where the data is
uncompressed, so the peer may choose). Every C-STORE response status is checked; a rejected,
aborted or unreachable peer becomes a :class:`~node.errors.DeliveryError` that says which.
"""

from __future__ import annotations

import copy
import logging
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated at import

from node.delivery.base import Delivered, Destination, TestOutcome
from node.delivery.config import DicomConfig
from node.delivery.transcode import transcoded
from node.errors import DeliveryError

log = logging.getLogger(__name__)

# PS3.4 Annex B.2.3, Table B.2-1: C-STORE response statuses of the Storage Service Class.
STORE_SUCCESS = 0x0000
STORE_WARNING_COERCION_OF_DATA_ELEMENTS = 0xB000
STORE_WARNING_ELEMENTS_DISCARDED = 0xB006
STORE_WARNING_DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xB007
STORE_REFUSED_OUT_OF_RESOURCES = range(0xA700, 0xA800)
STORE_ERROR_DATA_SET_DOES_NOT_MATCH_SOP_CLASS = range(0xA900, 0xAA00)
STORE_ERROR_CANNOT_UNDERSTAND = range(0xC000, 0xD000)
# PS3.7 Annex C: general statuses a Storage SCP may also answer with.
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
INVALID_SOP_INSTANCE = 0x0117
SOP_CLASS_NOT_SUPPORTED = 0x0122
NOT_AUTHORIZED = 0x0124
# PS3.4 Annex A.4: the Verification Service Class's C-ECHO success.
ECHO_SUCCESS = 0x0000

_STORE_WARNINGS = {
    STORE_WARNING_COERCION_OF_DATA_ELEMENTS: "coercion of data elements",
    STORE_WARNING_ELEMENTS_DISCARDED: "elements discarded",
    STORE_WARNING_DATA_SET_DOES_NOT_MATCH_SOP_CLASS: "data set does not match SOP class",
}
_STORE_FAILURES = {
    PROCESSING_FAILURE: "processing failure",
    INVALID_SOP_INSTANCE: "invalid SOP instance",
    SOP_CLASS_NOT_SUPPORTED: "SOP class not supported",
    NOT_AUTHORIZED: "not authorized",
}
_STORE_FAILURE_RANGES = (
    (STORE_REFUSED_OUT_OF_RESOURCES, "refused: out of resources"),
    (STORE_ERROR_DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "error: data set does not match SOP class"),
    (STORE_ERROR_CANNOT_UNDERSTAND, "error: cannot understand"),
)

_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
_REENCODABLE = (*_UNCOMPRESSED, DeflatedExplicitVRLittleEndian)
#: PS3.8 9.3.2.2: at most 128 presentation contexts (odd IDs 1-255) in one association
_MAX_CONTEXTS = 128


def store_status_problem(code: int) -> str | None:
    """Why a C-STORE status is a failure, or None for success, warnings and duplicates."""
    if code == STORE_SUCCESS or code in _STORE_WARNINGS or code == DUPLICATE_SOP_INSTANCE:
        return None
    if code in _STORE_FAILURES:
        return _STORE_FAILURES[code]
    for codes, meaning in _STORE_FAILURE_RANGES:
        if code in codes:
            return meaning
    return "a status PS3.4 does not define for C-STORE"


class DicomDestination(Destination):
    def __init__(self, config: DicomConfig) -> None:
        self.name = config.name
        self.config = config

    @property
    def peer(self) -> str:
        """The peer as messages name it: AE title at host:port."""
        return f"{self.config.ae_title!r} at {self.config.host}:{self.config.port}"

    def send(self, datasets: Sequence[Dataset]) -> list[Delivered]:
        if not datasets:
            return []
        prepared = [_with_transfer_syntax(d) for d in transcoded(datasets, self.config.transfer_syntax)]
        contexts = _requested_contexts(prepared)
        if len(contexts) > _MAX_CONTEXTS:
            raise DeliveryError(
                f"the results use {len(contexts)} SOP classes; one association allows "
                f"{_MAX_CONTEXTS} presentation contexts (PS3.8 9.3.2.2)"
            )
        association = self._associate(contexts)
        try:
            # Check every SOP class first, so a partly supported result set sends nothing.
            self._require_contexts(association, contexts)
            return [self._store(association, dataset) for dataset in prepared]
        finally:
            if association.is_established:
                association.release()

    def test(self) -> TestOutcome:
        started = time.monotonic()
        try:
            association = self._associate({Verification: [ImplicitVRLittleEndian]})
        except DeliveryError as error:
            return TestOutcome(ok=False, message=str(error))
        try:
            status = association.send_c_echo()
        finally:
            if association.is_established:
                association.release()
        if "Status" not in status:
            return TestOutcome(
                ok=False,
                message=f"{self.peer} sent no C-ECHO response within {self._seconds:g} s "
                "or aborted the association",
            )
        if status.Status != ECHO_SUCCESS:
            return TestOutcome(
                ok=False, message=f"{self.peer} answered C-ECHO with status 0x{status.Status:04X}"
            )
        elapsed = (time.monotonic() - started) * 1000
        return TestOutcome(ok=True, message=f"C-ECHO to {self.peer} succeeded in {elapsed:.0f} ms")

    @property
    def _seconds(self) -> float:
        return self.config.timeout.total_seconds()

    def _require_contexts(self, association: Association, contexts: dict[UID, list[UID]]) -> None:
        accepted = {context.abstract_syntax for context in association.accepted_contexts}
        for sop_class, transfer_syntaxes in contexts.items():
            if sop_class not in accepted:
                offered = ", ".join(syntax.name for syntax in transfer_syntaxes)
                raise DeliveryError(
                    f"{self.peer} accepted no presentation context for {sop_class.name} ({sop_class}): "
                    f"it does not store that SOP class, or in none of {offered}"
                )

    def _store(self, association: Association, dataset: Dataset) -> Delivered:
        uid = str(dataset.SOPInstanceUID)
        sop_class = UID(dataset.SOPClassUID)
        try:
            status = association.send_c_store(dataset)
        except ValueError as error:  # no accepted context for its transfer syntax, or not encodable
            raise DeliveryError(f"could not send {sop_class.name} {uid} to {self.peer}: {error}") from error
        if "Status" not in status:
            raise DeliveryError(
                f"{self.peer} sent no C-STORE response for {uid} within {self._seconds:g} s "
                "or aborted the association"
            )
        code = int(status.Status)
        problem = store_status_problem(code)
        if problem is not None:
            comment = f": {status.ErrorComment}" if "ErrorComment" in status else ""
            raise DeliveryError(
                f"{self.peer} refused {sop_class.name} {uid} with C-STORE status 0x{code:04X} "
                f"({problem}){comment}"
            )
        if code in _STORE_WARNINGS:
            log.warning(
                "destination stored with a warning",
                extra={"destination": self.name, "sop_instance_uid": uid, "warning": _STORE_WARNINGS[code]},
            )
        return Delivered(
            sop_instance_uid=uid,
            location=f"{self.config.ae_title}@{self.config.host}:{self.config.port}",
            already_present=code == DUPLICATE_SOP_INSTANCE,
        )

    def _associate(self, contexts: dict[UID, list[UID]]) -> Association:
        ae = AE(ae_title=self.config.calling_ae_title)
        ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self._seconds
        for abstract_syntax, transfer_syntaxes in contexts.items():
            ae.add_requested_context(abstract_syntax, transfer_syntaxes)
        tls = self._tls_args()
        connected: list[bool] = []

        def on_connection_open(event: Any) -> None:
            connected.append(True)

        started = time.monotonic()
        association = ae.associate(
            self.config.host,
            self.config.port,
            ae_title=self.config.ae_title,
            tls_args=tls,
            evt_handlers=[(evt.EVT_CONN_OPEN, on_connection_open)],
        )
        if association.is_established:
            return association
        if association.is_rejected:
            raise DeliveryError(self._rejection(association))
        if not connected:
            raise DeliveryError(f"could not connect to {self.peer}: {self._connection_problem(tls)}")
        if time.monotonic() - started >= self._seconds:
            raise DeliveryError(
                f"{self.peer} did not answer the association request within {self._seconds:g} s"
            )
        raise DeliveryError(f"{self.peer} aborted the association request (A-ABORT)")

    def _rejection(self, association: Association) -> str:
        answer = association.acceptor.primitive
        if answer is None:  # pragma: no cover - pynetdicom sets it for every A-ASSOCIATE-RJ
            return f"{self.peer} rejected the association (A-ASSOCIATE-RJ)"
        source, reason = answer.result_source, answer.diagnostic
        details = (
            f"A-ASSOCIATE-RJ: {answer.result_str.lower()}, source: {answer.source_str.lower()}, "
            f"reason {reason}"
        )
        # PS3.8 Table 9-21: reasons given by the service user (source 1)
        if (source, reason) == (1, 7):
            return (
                f"called AE title {self.config.ae_title!r} not recognised by "
                f"{self.config.host}:{self.config.port} ({details})"
            )
        if (source, reason) == (1, 3):
            return (
                f"calling AE title {self.config.calling_ae_title!r} not recognised by {self.peer}: "
                f"add this node to the peer's known AEs ({details})"
            )
        return f"{self.peer} rejected the association: {answer.reason_str.lower()} ({details})"

    def _tls_args(self) -> tuple[ssl.SSLContext, str] | None:
        tls = self.config.tls
        if tls is None:
            return None
        try:
            context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
            if tls.cert_file is not None and tls.key_file is not None:
                context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as error:
            raise DeliveryError(
                f"the TLS files of destination {self.name!r} cannot be used: {error}"
            ) from error
        return context, self.config.host

    def _connection_problem(self, tls: tuple[ssl.SSLContext, str] | None) -> str:
        """Why a connection failed: pynetdicom only logs it, so connect once more to find out."""
        address = (self.config.host, self.config.port)
        try:
            with socket.create_connection(address, timeout=self._seconds) as connection:
                if tls is not None:
                    context, hostname = tls
                    with context.wrap_socket(connection, server_hostname=hostname):
                        pass
        except ConnectionRefusedError:
            return "connection refused (nothing listens on that port, or a firewall refuses)"
        except socket.gaierror as error:
            return f"host name {self.config.host!r} not found ({error.strerror})"
        except ssl.SSLError as error:
            return f"TLS handshake failed: {error.reason or error}"
        except TimeoutError:
            return f"no answer within {self._seconds:g} s"
        except OSError as error:
            return error.strerror or str(error)
        return "the connection failed, but a second attempt connected: the peer may be overloaded"


def _with_transfer_syntax(dataset: Dataset) -> Dataset:
    """The dataset, or a shallow copy with file meta naming explicit VR little endian."""
    if "TransferSyntaxUID" in getattr(dataset, "file_meta", FileMetaDataset()):
        return dataset
    copied = copy.copy(dataset)
    copied.file_meta = FileMetaDataset()
    copied.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return copied


def _requested_contexts(datasets: Sequence[Dataset]) -> dict[UID, list[UID]]:
    """Transfer syntaxes to offer per SOP class: each dataset's own first."""
    contexts: dict[UID, list[UID]] = {}
    for dataset in datasets:
        syntax = UID(dataset.file_meta.TransferSyntaxUID)
        offered = contexts.setdefault(UID(dataset.SOPClassUID), [])
        # pynetdicom re-encodes an in-memory dataset between the uncompressed syntaxes, the
        # deflated one among them: a peer that takes no deflate gets it uncompressed
        candidates = [syntax, *_UNCOMPRESSED] if syntax in _REENCODABLE else [syntax]
        offered.extend(s for s in candidates if s not in offered)
    return contexts
