"""Configuration of result destinations: one pydantic model per type, told apart by ``type``.

``this-orthanc`` stores results back into the study in the node's own Orthanc (the default),
``dicom`` sends them by C-STORE to a DICOM node, ``dicomweb`` by STOW-RS to a DICOMweb server.
Secrets are ``SecretStr``: their repr and str are masked, and ``public_view()`` replaces them
with ``has_<field>: true`` so nothing an API or UI shows can carry one.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, Field, SecretStr, model_validator

from node.config import AETitle, Port, PositiveDuration, _Strict
from node.delivery.transcode import TransferSyntaxChoice

#: a destination's name as shown in logs, job details and the admin console
DestinationName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")]


def _valid_http_url(value: str) -> str:
    parts = urlsplit(value)
    # First, so that the messages below, which quote the URL, never quote a password.
    if parts.username is not None or parts.password is not None:
        # A password in the URL would be shown wherever the URL is; it belongs in ``auth``.
        raise ValueError("URL must not contain a user name or password: set them under auth")
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"URL {value!r} must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"URL {value!r} names no host")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_valid_http_url)]


class _DestinationBase(_Strict):
    def public_view(self) -> dict[str, Any]:
        """JSON-ready settings for the API and UI, each secret replaced by ``has_<field>: bool``."""
        return _public_dict(self)


class ThisOrthancConfig(_DestinationBase):
    """Store results into the source study in the node's own Orthanc."""

    type: Literal["this-orthanc"]
    name: DestinationName = "this-orthanc"


class TlsConfig(_Strict):
    """TLS for a DICOM association (PS3.15 Annex B.1, the Basic TLS Secure Transport profile)."""

    #: certificates that may sign the peer's certificate; default: the system's CA store
    ca_file: Path | None = None
    #: this node's certificate and key, for peers that require client authentication
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            given = "cert_file" if self.cert_file is not None else "key_file"
            missing = "key_file" if self.cert_file is not None else "cert_file"
            raise ValueError(f"tls.{given} is set but tls.{missing} is not: give both or neither")
        return self


class DicomConfig(_DestinationBase):
    """A DICOM node that receives results by C-STORE."""

    type: Literal["dicom"]
    name: DestinationName
    #: the peer's AE title (Called AE Title)
    ae_title: AETitle
    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Port
    #: this node's AE title in the association (Calling AE Title)
    calling_ae_title: AETitle = "AINODE"
    tls: TlsConfig | None = None
    #: limit for connecting, association negotiation and each DIMSE response
    timeout: PositiveDuration = timedelta(seconds=30)
    #: the transfer syntax the results are offered in (node.delivery.transcode); a peer that
    #: refuses deflated gets them uncompressed
    transfer_syntax: TransferSyntaxChoice = TransferSyntaxChoice.EXPLICIT


class NoAuth(_Strict):
    type: Literal["none"] = "none"


class BasicAuth(_Strict):
    type: Literal["basic"]
    username: Annotated[str, Field(min_length=1)]
    password: SecretStr


class BearerAuth(_Strict):
    type: Literal["bearer"]
    token: SecretStr


HttpAuth = Annotated[NoAuth | BasicAuth | BearerAuth, Field(discriminator="type")]


class DicomWebConfig(_DestinationBase):
    """A DICOMweb server that receives results by STOW-RS (PS3.18 10.5)."""

    type: Literal["dicomweb"]
    name: DestinationName
    #: the DICOMweb root, e.g. https://pacs.example.org/dicom-web
    url: HttpUrl
    auth: HttpAuth = NoAuth()
    #: limit for connecting and for each response
    timeout: PositiveDuration = timedelta(seconds=60)
    #: the transfer syntax the results are stored in (node.delivery.transcode)
    transfer_syntax: TransferSyntaxChoice = TransferSyntaxChoice.EXPLICIT


DestinationConfig = Annotated[ThisOrthancConfig | DicomConfig | DicomWebConfig, Field(discriminator="type")]


def _public_dict(config: BaseModel) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for field in type(config).model_fields:
        view.update(_public_field(field, getattr(config, field)))
    return view


def _public_field(field: str, value: Any) -> dict[str, Any]:
    if isinstance(value, SecretStr):
        return {f"has_{field}": bool(value.get_secret_value())}
    if isinstance(value, BaseModel):
        return {field: _public_dict(value)}
    if isinstance(value, timedelta):
        return {field: value.total_seconds()}
    if isinstance(value, Path):
        return {field: str(value)}
    return {field: value}
