"""A job's result objects on disk until every destination has them.

Deliveries are retried on their own schedule, possibly by another worker after a restart, so
the objects they send must outlive the worker that built them, and the machine too: they are
written once, straight to their files (:meth:`~node.results.part10.ResultObject.write`), as
DICOM Part 10 files under ``<data_dir>/results/<job uid>/``, synced to the disk before the job
is done, and removed when the job's last delivery succeeds. Workers on several hosts must
share the data folder (docs/architecture.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from node.errors import DeliveryError
from node.results.part10 import ResultObject


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
