"""Destinations without peers: configuration, secrets kept out of views, the backoff schedule."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from node.config import DeliveryRetrySettings
from node.delivery import DestinationConfig
from node.delivery.config import DicomConfig, DicomWebConfig, ThisOrthancConfig
from node.delivery.dicom import (
    DUPLICATE_SOP_INSTANCE,
    SOP_CLASS_NOT_SUPPORTED,
    STORE_ERROR_CANNOT_UNDERSTAND,
    STORE_REFUSED_OUT_OF_RESOURCES,
    STORE_SUCCESS,
    STORE_WARNING_COERCION_OF_DATA_ELEMENTS,
    store_status_problem,
)
from node.delivery.kinds import from_config
from node.orthanc.client import OrthancClient
from node.support.retry import next_attempt_delay

ADAPTER: TypeAdapter[Any] = TypeAdapter(DestinationConfig)
DICOM = {"type": "dicom", "name": "PACS", "ae_title": "PACS", "host": "pacs.example.org", "port": 104}
DICOMWEB = {"type": "dicomweb", "name": "archive", "url": "https://pacs.example.org/dicom-web/"}
PASSWORD = "correct horse battery staple"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.secret-token"


def parse(data: dict[str, Any]) -> Any:
    return ADAPTER.validate_python(data)


# --- configuration


def test_type_selects_the_configuration_class() -> None:
    assert isinstance(parse({"type": "this-orthanc"}), ThisOrthancConfig)
    assert isinstance(parse(DICOM), DicomConfig)
    assert isinstance(parse(DICOMWEB), DicomWebConfig)


def test_dicom_defaults_calling_ae_title_and_timeout() -> None:
    config = parse(DICOM)
    assert (config.calling_ae_title, config.timeout, config.tls) == ("AINODE", timedelta(seconds=30), None)


def test_unknown_type_is_refused_naming_the_allowed_ones() -> None:
    with pytest.raises(ValidationError, match=r"'this-orthanc', 'dicom', 'dicomweb'"):
        parse({"type": "ftp", "name": "x"})


def test_unknown_key_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"dicom\.aetitle\s+Extra inputs are not permitted"):
        parse({**DICOM, "aetitle": "PACS"})


def test_long_ae_title_is_refused_with_its_length() -> None:
    with pytest.raises(
        ValidationError, match=r"AE title 'AINODE-RESEARCH-01' is 18 characters; PS3.5 allows 16"
    ):
        parse({**DICOM, "ae_title": "AINODE-RESEARCH-01"})


def test_port_out_of_range_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"dicom\.port\s+Input should be less than or equal to 65535"):
        parse({**DICOM, "port": 70000})


def test_zero_timeout_is_refused() -> None:
    with pytest.raises(
        ValidationError, match=r"dicom\.timeout\s+Value error, duration 0 s must be more than 0 s"
    ):
        parse({**DICOM, "timeout": 0})


def test_tls_certificate_without_key_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"tls.cert_file is set but tls.key_file is not"):
        parse({**DICOM, "tls": {"cert_file": "/etc/node.pem"}})


def test_dicomweb_url_must_be_http() -> None:
    with pytest.raises(
        ValidationError, match=r"URL 'ftp://pacs/dicom-web' must start with http:// or https://"
    ):
        parse({**DICOMWEB, "url": "ftp://pacs/dicom-web"})


def test_dicomweb_url_must_not_carry_credentials() -> None:
    with pytest.raises(
        ValidationError, match=r"must not contain a user name or password: set them under auth"
    ):
        parse({**DICOMWEB, "url": f"https://ai:{PASSWORD}@pacs/dicom-web"})


def test_a_bad_url_with_a_password_is_refused_without_quoting_it() -> None:
    with pytest.raises(ValidationError, match="must not contain a user name or password") as refused:
        parse({**DICOMWEB, "url": f"ftp://ai:{PASSWORD}@pacs/dicom-web"})
    assert PASSWORD not in str(refused.value.errors(include_input=False))


def test_dicomweb_url_loses_its_trailing_slash() -> None:
    assert parse(DICOMWEB).url == "https://pacs.example.org/dicom-web"


def test_basic_auth_needs_a_password() -> None:
    with pytest.raises(ValidationError, match=r"auth\.basic\.password\s+Field required"):
        parse({**DICOMWEB, "auth": {"type": "basic", "username": "ai"}})


def test_unknown_auth_type_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"'none', 'basic', 'bearer'"):
        parse({**DICOMWEB, "auth": {"type": "digest"}})


def test_retry_settings_refuse_zero_attempts() -> None:
    with pytest.raises(ValidationError, match=r"max_attempts\s+Input should be greater than or equal to 1"):
        DeliveryRetrySettings(max_attempts=0)


# --- secrets


def basic() -> DicomWebConfig:
    return parse({**DICOMWEB, "auth": {"type": "basic", "username": "ai", "password": PASSWORD}})


def bearer() -> DicomWebConfig:
    return parse({**DICOMWEB, "auth": {"type": "bearer", "token": TOKEN}})


def test_public_view_replaces_the_password_by_has_password() -> None:
    assert basic().public_view() == {
        "type": "dicomweb",
        "name": "archive",
        "url": "https://pacs.example.org/dicom-web",
        "auth": {"type": "basic", "username": "ai", "has_password": True},
        "timeout": 60.0,
        "transfer_syntax": "explicit",
    }


def test_public_view_replaces_the_token_by_has_token() -> None:
    assert bearer().public_view()["auth"] == {"type": "bearer", "has_token": True}


@pytest.mark.parametrize("config", [basic(), bearer()], ids=["basic", "bearer"])
def test_secret_is_in_no_repr_str_or_public_view(config: DicomWebConfig) -> None:
    shown = [repr(config), str(config), repr(config.public_view()), repr(config.auth)]
    assert not [text for text in shown if PASSWORD in text or TOKEN in text]


@pytest.mark.parametrize("config", [basic(), bearer()], ids=["basic", "bearer"])
def test_secret_is_not_in_the_destinations_repr(config: DicomWebConfig) -> None:
    destination = from_config(config, OrthancClient("http://127.0.0.1:1"))
    assert repr(destination) == "<DicomWebDestination 'archive'>"


def test_dicom_public_view_shows_tls_paths_and_seconds() -> None:
    config = parse({**DICOM, "tls": {"ca_file": "/etc/ca.pem"}, "timeout": 5})
    assert config.public_view()["tls"] == {"ca_file": "/etc/ca.pem", "cert_file": None, "key_file": None}
    assert config.public_view()["timeout"] == 5.0


# --- C-STORE statuses (PS3.4 Annex B.2.3)


def test_success_warning_and_duplicate_are_not_problems() -> None:
    for code in (STORE_SUCCESS, STORE_WARNING_COERCION_OF_DATA_ELEMENTS, DUPLICATE_SOP_INSTANCE):
        assert store_status_problem(code) is None


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        (STORE_REFUSED_OUT_OF_RESOURCES.start + 0x10, "refused: out of resources"),
        (STORE_ERROR_CANNOT_UNDERSTAND.start + 1, "error: cannot understand"),
        (SOP_CLASS_NOT_SUPPORTED, "SOP class not supported"),
    ],
)
def test_failure_statuses_are_named(code: int, problem: str) -> None:
    assert store_status_problem(code) == problem


# --- backoff schedule


def test_backoff_doubles_from_thirty_seconds() -> None:
    delays = [next_attempt_delay(attempt).total_seconds() for attempt in range(1, 6)]
    assert delays == [30, 60, 120, 240, 480]


def test_backoff_stops_at_the_cap() -> None:
    assert next_attempt_delay(8) == timedelta(hours=1)
    assert next_attempt_delay(10_000) == timedelta(hours=1)


def test_backoff_follows_base_factor_and_cap() -> None:
    delays = [
        next_attempt_delay(n, base=timedelta(seconds=1), factor=3, cap=timedelta(seconds=20))
        for n in (1, 2, 3, 4)
    ]
    assert delays == [timedelta(seconds=s) for s in (1, 3, 9, 20)]


def test_backoff_refuses_attempt_zero() -> None:
    with pytest.raises(ValueError, match=r"attempt is 0; failed attempts are counted from 1"):
        next_attempt_delay(0)


def test_backoff_refuses_a_cap_below_the_base() -> None:
    with pytest.raises(ValueError, match=r"cap 10 s is less than the base delay 30 s"):
        next_attempt_delay(1, cap=timedelta(seconds=10))


def test_a_transfer_syntax_the_node_cannot_write_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="transfer_syntax"):
        TypeAdapter(DestinationConfig).validate_python(
            {
                "type": "dicom",
                "name": "x",
                "ae_title": "PACS",
                "host": "pacs",
                "port": 104,
                "transfer_syntax": "jpeg",
            }
        )
