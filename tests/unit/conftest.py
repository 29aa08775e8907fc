"""Fixtures shared by the unit tests of the job database's stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from node.db import create_engine_for, migrate
from node.db.secrets import SecretBox
from tests.unit.job_db import Clock


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def secret_box(tmp_path: Path) -> SecretBox:
    """The key of a node's data folder (``secrets.key``), created as a node creates it."""
    return SecretBox.from_key_file(tmp_path / "secrets.key")
