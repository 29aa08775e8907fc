"""The data folder and every file with a secret are the node's account's alone, whatever the
umask of the shell that started it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.config import HttpsSettings, OrthancSettings, Settings
from node.db import create_engine_for, migrate
from node.orthanc.process import PLUGINS, write_runtime_files
from node.orthanc.tls import make_self_signed


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The umask of a default shell: new files world-readable unless the node says otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_runtime_files_are_private_and_an_old_open_data_folder_is_closed(
    tmp_path: Path, open_umask: None
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for name in PLUGINS:
        (plugins / name).touch()
    pair = make_self_signed(tmp_path / "tls")
    data = tmp_path / "var"
    data.mkdir(mode=0o755)  # left by an older node
    (data / "credentials.json").write_text('{"users": []}')  # an older node's, mode 644
    settings = Settings(
        data_dir=data,
        database_url="postgresql+psycopg://ai:db-password@db.example/jobs",
        orthanc=OrthancSettings(
            plugin_folder=plugins,
            https=HttpsSettings(certificate=pair.certificate, private_key=pair.private_key),
        ),
    )
    paths = write_runtime_files(settings)
    assert mode(data) == 0o700
    private = ["node_config", "orthanc_config", "credentials", "https_pem"]
    assert {key: oct(mode(paths[key])) for key in private} == dict.fromkeys(private, oct(0o600))
    assert "db-password" in paths["node_config"].read_text()  # it is why node.yaml is 600


def test_the_job_database_and_its_wal_files_are_private(tmp_path: Path, open_umask: None) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    migrate(url)
    engine = create_engine_for(url)
    with engine.connect() as connection:  # holds the -wal and -shm files open
        connection.exec_driver_sql("SELECT 1")
        files = sorted(path.name for path in tmp_path.iterdir())
        assert files == ["jobs.sqlite", "jobs.sqlite-shm", "jobs.sqlite-wal"]
        assert {oct(mode(tmp_path / name)) for name in files} == {oct(0o600)}
    engine.dispose()


def test_a_job_database_an_older_node_left_readable_is_narrowed(tmp_path: Path, open_umask: None) -> None:
    database = tmp_path / "jobs.sqlite"
    migrate(f"sqlite:///{database}")
    database.chmod(0o644)
    create_engine_for(f"sqlite:///{database}").dispose()
    assert mode(database) == 0o600


def test_ai_node_commands_create_private_files_whatever_the_umask(tmp_path: Path) -> None:
    data = tmp_path / "var"
    subprocess.run(
        [sys.executable, "-m", "node.cli.main", "tls", "self-signed", "--data-dir", str(data)],
        check=True,
        capture_output=True,
        # the shell's umask; ai-node sets its own before creating anything
        preexec_fn=lambda: os.umask(0o022),
    )
    assert (mode(data), mode(data / "tls"), mode(data / "tls" / "node.key")) == (0o700, 0o700, 0o600)
    assert mode(data / "tls" / "node.crt") == 0o644  # the certificate is public
