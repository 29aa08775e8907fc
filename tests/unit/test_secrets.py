"""Destination secrets sealed in the job database with a key kept outside it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine, exc, text

from node.db.config_store import ConfigStore
from node.db.secrets import SEALED, SecretBox
from node.errors import ConfigurationError
from tests.unit.api_node import api_node

SECRET = "pw-7f3a-never-on-disk"


def dicomweb(password: str = SECRET) -> dict:
    return {
        "type": "dicomweb",
        "name": "archive",
        "url": "https://pacs.example/dicom-web",
        "auth": {"type": "basic", "username": "ai", "password": password},
    }


def test_a_sealed_document_opens_to_the_same_document(secret_box: SecretBox) -> None:
    sealed = secret_box.seal(dicomweb())
    assert set(sealed["auth"]["password"]) == {SEALED} and SECRET not in str(sealed)
    assert sealed["auth"]["username"] == "ai"
    assert secret_box.open(sealed).document == dicomweb()


def test_the_key_file_is_created_once_and_private(tmp_path: Path) -> None:
    first = SecretBox.from_key_file(tmp_path / "secrets.key")
    second = SecretBox.from_key_file(tmp_path / "secrets.key")
    assert second.open(first.seal(dicomweb())).document == dicomweb()
    assert stat.S_IMODE((tmp_path / "secrets.key").stat().st_mode) == 0o600


def test_no_secret_is_in_the_database_files(engine: Engine, secret_box: SecretBox, tmp_path: Path) -> None:
    config = ConfigStore(engine, secrets=secret_box)
    config.save_destination("archive", "dicomweb", dicomweb(), actor="alice")
    config.save_destination("archive", "dicomweb", dicomweb(SECRET + "-2"), actor="alice")
    stored = config.get_destination("archive")
    assert stored is not None and stored.document["auth"]["password"] == SECRET + "-2"
    # in the WAL as well as the main file: read both before and after a checkpoint
    files = [tmp_path / "jobs.sqlite", tmp_path / "jobs.sqlite-wal"]
    assert all(SECRET.encode() not in path.read_bytes() for path in files if path.exists())
    with engine.connect() as connection:
        connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    assert SECRET.encode() not in (tmp_path / "jobs.sqlite").read_bytes()


def test_resaving_the_same_secret_is_no_change(engine: Engine, secret_box: SecretBox) -> None:
    config = ConfigStore(engine, secrets=secret_box)
    config.save_destination("archive", "dicomweb", dicomweb(), actor="alice")
    before, after = config.save_destination("archive", "dicomweb", dicomweb(), actor="bob")
    assert before == after and [entry.actor for entry in config.audit()] == ["alice"]


def test_secrets_stored_in_clear_by_an_older_node_are_sealed(engine: Engine, secret_box: SecretBox) -> None:
    ConfigStore(engine, secrets=secret_box).save_destination("archive", "dicomweb", {}, actor="old")
    with engine.begin() as connection:  # as a node before sealing stored it
        connection.execute(
            text("UPDATE destinations SET document = :document"),
            {"document": f'{{"auth": {{"password": "{SECRET}"}}}}'},
        )
    config = ConfigStore(engine, secrets=secret_box)
    assert config.seal_clear_secrets() == ["archive"]
    with engine.connect() as connection:
        raw = connection.execute(text("SELECT document FROM destinations")).scalar_one()
    assert SECRET not in raw
    stored = config.get_destination("archive")
    assert stored is not None and stored.document == {"auth": {"password": SECRET}}
    assert config.seal_clear_secrets() == []


def test_a_store_without_the_key_refuses_to_save_a_secret(engine: Engine) -> None:
    with pytest.raises(ConfigurationError, match=r"'archive': auth.password cannot be stored without"):
        ConfigStore(engine).save_destination("archive", "dicomweb", dicomweb(), actor="alice")


def test_a_lost_key_names_the_secret_to_enter_again(tmp_path: Path) -> None:
    node = api_node(tmp_path)
    assert node.call("POST", "/ai/destinations", json=dicomweb()).status == 201
    (tmp_path / "secrets.key").write_bytes(Fernet.generate_key())  # the key was replaced
    again = api_node(tmp_path)
    shown = again.call("GET", "/ai/destinations/archive").body
    assert shown["unreadable_secrets"] == ["auth.password"]
    assert "cannot be decrypted with this node's secrets key" in shown["problem"]
    fixed = dicomweb("entered-again")
    assert again.call("PUT", "/ai/destinations/archive", json=fixed).status == 200
    stored = again.config.get_destination("archive")
    assert stored is not None and stored.document["auth"]["password"] == "entered-again"


def test_a_database_error_does_not_quote_the_statement_s_values(engine: Engine) -> None:
    with pytest.raises(exc.IntegrityError) as raised, engine.begin() as connection:
        # type, document and the stamps are NOT NULL: the insert fails, quoting its statement
        connection.execute(text("INSERT INTO destinations (name) VALUES (:name)"), {"name": SECRET})
    assert "destinations" in str(raised.value) and SECRET not in str(raised.value)
