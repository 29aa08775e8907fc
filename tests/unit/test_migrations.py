"""The job database's migrations: they build exactly the models' schema, run once, and survive
several processes starting at the same moment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, Table, inspect, text
from sqlalchemy.exc import IntegrityError

from node.db import DatabaseSchemaError, create_engine_for, migrate
from node.db.database import alembic_config
from node.db.models import Base
from tests.job_processes import migrate_in_processes


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(url: str) -> str | None:
    engine = create_engine_for(url)
    with engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    engine.dispose()
    return revision


def drift(url: str, metadata: MetaData) -> list[Any]:
    engine = create_engine_for(url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    engine.dispose()
    return list(differences)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.sqlite'}"


def test_migrate_brings_a_new_database_to_the_head_revision(url: str) -> None:
    migrate(url)
    assert current_revision(url) == head_revision()


def test_migrated_database_matches_the_models(url: str) -> None:
    migrate(url)
    assert drift(url, Base.metadata) == []


def test_drift_check_notices_a_column_missing_from_the_migrations(url: str) -> None:
    migrate(url)
    metadata = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    Table("jobs", metadata, Column("extra", Integer), extend_existing=True)
    assert [difference[0] for difference in drift(url, metadata)] == ["add_column"]


def test_migrate_twice_changes_nothing(url: str) -> None:
    migrate(url)
    engine = create_engine_for(url)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO node_state (key, value, updated_at) VALUES ('k', 'v', '2026-01-01')")
        )
    migrate(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT value FROM node_state")).scalar_one() == "v"
    engine.dispose()
    assert current_revision(url) == head_revision()


def test_migrate_accepts_an_engine(url: str) -> None:
    engine = create_engine_for(url)
    migrate(engine)
    assert set(inspect(engine).get_table_names()) >= {"jobs", "node_state", "alembic_version"}
    engine.dispose()


def test_migrate_refuses_a_database_from_a_newer_node(url: str) -> None:
    migrate(url)
    engine = create_engine_for(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(DatabaseSchemaError, match="is at schema revision 9999, which this version"):
        migrate(url)


def test_processes_migrating_one_new_database_at_once_all_succeed(url: str) -> None:
    assert migrate_in_processes(url) == [0, 0, 0, 0]
    assert current_revision(url) == head_revision()
    assert drift(url, Base.metadata) == []


def test_the_delivery_status_column_refuses_an_unknown_status(url: str) -> None:
    migrate(url)
    engine = create_engine_for(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (uid, orthanc_study_id, study_instance_uid, pipeline_name, "
                "pipeline_version, generation, status, attempts, max_attempts, priority, "
                "created_at, updated_at, trigger) VALUES ('u', 'o', '1.2', 'p', '1', 0, 'queued', "
                "0, 3, 0, '2026-01-01', '2026-01-01', 'manual')"
            )
        )
    with pytest.raises(IntegrityError, match="ck_deliveries_delivery_status"), engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO deliveries (job_id, destination, status, attempts, max_attempts, "
                "next_attempt_at, created_at, updated_at) VALUES (1, 'pacs', 'lost', 0, 3, "
                "'2026-01-01', '2026-01-01', '2026-01-01')"
            )
        )
    engine.dispose()
