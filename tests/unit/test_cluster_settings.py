"""What a host of a multi-host node runs and how it reaches the others (docs/scaling.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from node.config import Settings
from node.credentials import service_auth
from node.delivery.staging import ResultFiles, ResultRows, result_store
from node.errors import ConfigurationError
from node.intake.leader import RoutingLeadership

POSTGRES = "postgresql+psycopg://ai@db.example/jobs"


def _worker_host(tmp_path: Path, **cluster: object) -> dict[str, object]:
    password = tmp_path / "worker.password"
    password.write_text("s3cret\n")
    password.chmod(0o600)
    return {
        "database_url": POSTGRES,
        "cluster": {
            "role": "worker",
            "orthanc": {
                "urls": ["https://orthanc-1:8042", "https://orthanc-2:8042/"],
                "user": "w1",
                "password_file": str(password),
            },
            **cluster,
        },
    }


def test_a_worker_host_reaches_the_cluster_s_orthancs_with_its_own_user(tmp_path: Path) -> None:
    settings = Settings.model_validate(_worker_host(tmp_path))
    assert settings.orthanc_urls == ["https://orthanc-1:8042", "https://orthanc-2:8042"]
    assert service_auth(settings) == ("w1", "s3cret")
    assert settings.orthanc_trust is True  # https: the system's CAs unless told otherwise


@pytest.mark.parametrize(
    ("changes", "missing"),
    [
        ({"database_url": None}, "a PostgreSQL database_url"),
        ({"database_url": "sqlite:////tmp/jobs.sqlite"}, "a PostgreSQL database_url"),
        ({"cluster": {"role": "worker"}}, "cluster.orthanc"),
    ],
)
def test_a_worker_host_without_what_it_needs_is_refused_at_start(
    tmp_path: Path, changes: dict[str, object], missing: str
) -> None:
    with pytest.raises(ValueError, match=f"cluster.role worker .* needs .*{missing}"):
        Settings.model_validate({**_worker_host(tmp_path), **changes})


def test_a_password_file_others_may_read_is_refused(tmp_path: Path) -> None:
    settings = Settings.model_validate(_worker_host(tmp_path))
    (tmp_path / "worker.password").chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        service_auth(settings)


def test_one_host_reaches_its_own_orthanc() -> None:
    assert Settings().orthanc_urls == ["http://127.0.0.1:8042"]


def test_results_are_kept_in_files_with_sqlite_and_in_the_database_with_postgresql(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert isinstance(
        result_store(settings, create_engine(f"sqlite:///{tmp_path / 'jobs.sqlite'}")), ResultFiles
    )
    postgres = create_engine(POSTGRES)  # not connected: only its dialect is read
    assert isinstance(result_store(settings, postgres), ResultRows)


def test_with_sqlite_the_one_follower_always_routes(tmp_path: Path) -> None:
    leadership = RoutingLeadership(create_engine(f"sqlite:///{tmp_path / 'jobs.sqlite'}"))
    assert leadership.lead() and leadership.leading
