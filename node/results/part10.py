"""Result objects as DICOM Part 10 files (PS3.10): the form they are staged and sent in."""

from __future__ import annotations

import io

import pydicom
from pydicom.dataset import Dataset


def part10_bytes(dataset: Dataset) -> bytes:
    """``dataset`` as a Part 10 file: preamble, File Meta Information, then the data set."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()
