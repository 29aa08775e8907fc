"""Settings: defaults, files, validation messages."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from node.config import OrthancSettings, Settings, dump_settings, load_settings
from node.credentials import credentials_path, ensure_credentials
from node.errors import ConfigurationError
from node.orthanc.process import PLUGINS, render_orthanc_config, write_runtime_files
from node.orthanc.tls import make_self_signed


def _load(folder: Path, text: str) -> Settings:
    (folder / "node.yaml").write_text(text)
    return load_settings(folder / "node.yaml")


def test_defaults_match_the_documented_ports_and_ae_title() -> None:
    settings = Settings()
    assert (settings.orthanc.http_port, settings.orthanc.dicom_port, settings.orthanc.aet) == (
        8042,
        4242,
        "AINODE",
    )
    assert settings.orthanc.stable_age == timedelta(seconds=10)
    assert settings.resolved_database_url.endswith("/var/jobs.sqlite")


def test_relative_data_dir_is_relative_to_the_file(tmp_path: Path) -> None:
    settings = _load(tmp_path, "data_dir: store\northanc: {stable_age: 3}\n")
    assert settings.resolved_data_dir == tmp_path / "store"
    assert settings.orthanc.stable_age == timedelta(seconds=3)


def test_dumped_settings_read_back_equal(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, worker={"count": 3})
    (tmp_path / "out.yaml").write_text(dump_settings(settings))
    assert load_settings(tmp_path / "out.yaml") == settings


def test_unknown_key_is_refused_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"orthanc\.http_prot: Extra inputs are not permitted"):
        _load(tmp_path, "orthanc: {http_prot: 8042}\n")


def test_overlong_ae_title_names_the_limit(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is 18 characters; PS3.5 allows 16"):
        _load(tmp_path, "orthanc: {aet: AINODE-RESEARCH-01}\n")


def test_port_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="orthanc.http_port"):
        Settings().with_overrides(**{"orthanc.http_port": 70000})


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="must hold a mapping"):
        _load(tmp_path, "- just\n- a list\n")


def test_sr_without_seg_is_refused_when_the_file_loads(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="references the SEG's segments: list 'seg' too"):
        _load(tmp_path, "pipeline_settings: {ct-tissue: {results: [sr]}}\n")


def test_unknown_result_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"results\.1: Input should be 'seg', 'sr'"):
        _load(tmp_path, "pipeline_settings: {ct-tissue: {results: [seg, pdf]}}\n")


def test_retry_cap_below_the_base_delay_is_refused_when_the_file_loads(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="max_delay 10 s is less than base_delay 60 s"):
        _load(tmp_path, "delivery: {base_delay: 60, max_delay: 10}\n")


def _settings_with_plugins(tmp_path: Path, **orthanc: object) -> Settings:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for name in PLUGINS:
        (plugins / name).touch()
    return Settings(data_dir=tmp_path / "var", orthanc=OrthancSettings(plugin_folder=plugins, **orthanc))


def test_orthanc_asks_for_the_node_s_users_by_default(tmp_path) -> None:
    settings = _settings_with_plugins(tmp_path)
    credentials, _ = ensure_credentials(credentials_path(settings))
    config = render_orthanc_config(settings, credentials)
    assert config["AuthenticationEnabled"] is True
    assert config["RegisteredUsers"] == credentials.registered_users()
    assert set(config["RegisteredUsers"]) == {"admin", "ai-node", "ai-node-viewer"}


def test_authentication_off_registers_no_users(tmp_path) -> None:
    settings = _settings_with_plugins(tmp_path, authentication=False)
    credentials, _ = ensure_credentials(credentials_path(settings))
    config = render_orthanc_config(settings, credentials)
    assert (config["AuthenticationEnabled"], config["RegisteredUsers"]) == (False, {})


def test_remote_http_access_without_authentication_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="http_remote_access: true with authentication: false"):
        _load(tmp_path, "orthanc: {http_remote_access: true, authentication: false}\n")


def test_orthanc_never_recycles_storage_to_make_room(tmp_path: Path) -> None:
    settings = _settings_with_plugins(tmp_path, max_storage_size="2GB")
    assert settings.orthanc.max_storage_size == 2_000_000_000
    config = render_orthanc_config(settings, ensure_credentials(credentials_path(settings))[0])
    assert config["MaximumStorageSize"] == 0  # Orthanc 1.10 would delete the oldest patients


def test_allowed_callers_become_orthanc_s_own_allow_list(tmp_path: Path) -> None:
    callers = [{"ae_title": "CT1", "host": "10.0.0.5"}, {"ae_title": "MR2", "host": "10.0.0.6"}]
    settings = _settings_with_plugins(tmp_path, allowed_callers=callers)
    config = render_orthanc_config(settings, ensure_credentials(credentials_path(settings))[0])
    assert (config["DicomAlwaysAllowStore"], config["DicomCheckModalityHost"]) == (False, True)
    allowed = {
        (m["AET"], m["Host"], m["AllowStore"], m["AllowMove"]) for m in config["DicomModalities"].values()
    }
    assert allowed == {("CT1", "10.0.0.5", True, False), ("MR2", "10.0.0.6", True, False)}


def test_allowed_callers_need_a_host_for_all_or_none(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="give a host for every caller or for none"):
        _load(tmp_path, "orthanc: {allowed_callers: [{ae_title: CT1, host: ct1}, {ae_title: MR2}]}\n")


def test_security_files_are_relative_to_the_settings_file(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        "secrets_key_file: keys/secrets.key\n"
        "orthanc: {https: {certificate: tls/node.crt, private_key: tls/node.key}}\n",
    )
    assert settings.resolved_secrets_key_file == tmp_path / "keys" / "secrets.key"
    assert settings.orthanc.https is not None
    assert settings.orthanc.https.private_key == tmp_path / "tls" / "node.key"
    assert settings.orthanc_url.startswith("https://127.0.0.1:")
    assert settings.orthanc_trust == str(tmp_path / "tls" / "node.crt")


def test_a_key_that_is_not_the_certificate_s_stops_the_start(tmp_path: Path) -> None:
    first, second = make_self_signed(tmp_path / "a"), make_self_signed(tmp_path / "b")
    settings = _settings_with_plugins(
        tmp_path, https={"certificate": first.certificate, "private_key": second.private_key}
    )
    with pytest.raises(ConfigurationError, match="is not the key of the certificate"):
        write_runtime_files(settings)
