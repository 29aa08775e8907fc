"""A job's result objects on disk until every destination has them.

Deliveries are retried on their own schedule, possibly by another worker after a restart, so
the objects they send must outlive the worker that built them: they are written once, as
DICOM Part 10 files, under ``<data_dir>/results/<job uid>/``, and removed when the job's last
delivery succeeds. Workers on several hosts must share the data folder (docs/architecture.md).
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
from node.results.part10 import part10_bytes


class ResultFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, job_uid: str) -> Path:
        return self.root / job_uid

    def write(self, job_uid: str, datasets: Sequence[Dataset]) -> Path:
        """Write the objects of a job, all or nothing: a crash half-way leaves no folder that
        looks complete (the folder is renamed into place once every file is written)."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.folder(job_uid)
        staging = Path(tempfile.mkdtemp(prefix=f".{job_uid}.", dir=self.root))
        try:
            for index, dataset in enumerate(datasets, start=1):
                (staging / f"{index:05d}.dcm").write_bytes(part10_bytes(dataset))
            if target.exists():  # a job re-run after its worker died writes the same objects
                shutil.rmtree(target)
            os.replace(staging, target)
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
