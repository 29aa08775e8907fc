"""A job's result objects kept until every destination has them.

Deliveries are retried on their own schedule, possibly by another worker after a restart, so
the objects they send must outlive the worker that built them, and the machine too. Two
stores, one interface (``write``, ``read``, ``remove``), chosen by the job database
(:func:`result_store`):

- :class:`ResultFiles`, with SQLite (one host by construction): written once, straight to their
  files (:meth:`~node.results.part10.ResultObject.write`), as DICOM Part 10 files under
  ``<data_dir>/results/<job uid>/``, synced to the disk before the job is done;
- :class:`ResultRows`, with PostgreSQL (hosts that share nothing else, docs/scaling.md): the
  same bytes, compressed, in the job database (:mod:`node.db.staged`), which every worker of
  every host reads.

Either way they are removed when the job's last delivery succeeds.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import Engine

from node.config import Settings
from node.db.staged import StagedResults
from node.errors import DeliveryError
from node.results.part10 import ResultObject, part10_bytes


class ResultFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, job_uid: str) -> Path:
        return self.root / job_uid

    def write(self, job_uid: str, objects: Sequence[ResultObject]) -> Path:
        """Write the objects of a job, all or nothing: a crash half-way leaves no folder that
        looks complete (the folder is renamed into place once every file is on the disk)."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.folder(job_uid)
        staging = Path(tempfile.mkdtemp(prefix=f".{job_uid}.", dir=self.root))
        try:
            for index, obj in enumerate(objects, start=1):
                obj.write(staging / f"{index:05d}.dcm", durable=True)
            _sync_folder(staging)
            if target.exists():  # a job re-run after its worker died writes the same objects
                shutil.rmtree(target)
            os.replace(staging, target)
            _sync_folder(self.root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    def read(self, job_uid: str) -> list[Dataset]:
        folder = self.folder(job_uid)
        files = sorted(folder.glob("*.dcm")) if folder.is_dir() else []
        if not files:
            raise DeliveryError(
                f"the results of this job are no longer on disk ({folder}); re-run the job to "
                "build and send them again"
            )
        return [pydicom.dcmread(path) for path in files]

    def remove(self, job_uid: str) -> None:
        shutil.rmtree(self.folder(job_uid), ignore_errors=True)


def _sync_folder(folder: Path) -> None:
    """Put a folder's entries (new files, a rename) on the disk, as fsync does for a file."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class ResultRows:
    """The objects in the job database, for workers on hosts that share no disk."""

    def __init__(self, rows: StagedResults) -> None:
        self.rows = rows

    def write(self, job_uid: str, objects: Sequence[ResultObject]) -> None:
        self.rows.write(
            job_uid,
            [(str(obj.dataset.SOPInstanceUID), obj.encoded or part10_bytes(obj.dataset)) for obj in objects],
        )

    def read(self, job_uid: str) -> list[Dataset]:
        stored = self.rows.read(job_uid)
        if not stored:
            raise DeliveryError(
                "the results of this job are no longer in the job database; re-run the job to "
                "build and send them again"
            )
        return [pydicom.dcmread(io.BytesIO(data)) for data in stored]

    def remove(self, job_uid: str) -> None:
        self.rows.remove(job_uid)


ResultStore = ResultFiles | ResultRows


def result_store(settings: Settings, engine: Engine) -> ResultStore:
    """Files in the data folder with SQLite; rows in the job database with PostgreSQL, whose
    workers may be on other hosts (docs/scaling.md)."""
    if engine.dialect.name == "postgresql":
        return ResultRows(StagedResults(engine))
    return ResultFiles(settings.resolved_data_dir / "results")
