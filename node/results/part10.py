"""Result objects as DICOM Part 10 files (PS3.10): encoded once, then validated and staged.

A :class:`ResultObject` is written the cheapest way its size allows: an SR (a few megabytes,
but ~100,000 elements for a hundred segments, 0.7 s for pydicom to encode) is encoded once, and
those bytes are what the validator reads and what is staged; a SEG with 200 MB of Pixel Data is
never copied in memory: it is streamed straight to its file, and its validator gets a placeholder
(:func:`node.results.validate.validate_dataset`).
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from node.config import ResultKind

#: Pixel Data this large is streamed to the file rather than encoded into memory first
STREAMED_FROM = 8 * 2**20


def part10_bytes(dataset: Dataset) -> bytes:
    """``dataset`` as a Part 10 file: preamble, File Meta Information, then the data set."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def write_part10(dataset: Dataset, path: Path) -> None:
    """Write ``dataset`` as a Part 10 file straight to ``path``."""
    pydicom.dcmwrite(path, dataset, enforce_file_format=True)


def as_written(dataset: Dataset) -> None:
    """Declare a dataset built in memory to be Explicit VR Little Endian in its own character
    set already, as the node writes every object: pydicom then writes its elements as they are
    (raw per-frame groups included) instead of walking the whole tree first to resolve
    ambiguous VRs. An element whose VR is still ambiguous then fails the write, loudly."""
    # pydicom keeps the dataset's character set only in a private attribute
    dataset.set_original_encoding(False, True, dataset._character_set)


def is_large(dataset: Dataset) -> bool:
    """Whether ``dataset`` holds native Pixel Data of :data:`STREAMED_FROM` bytes or more."""
    value = dataset.get("PixelData") if "PixelData" in dataset else None
    return isinstance(value, bytes) and len(value) >= STREAMED_FROM


@dataclass(frozen=True, eq=False)
class ResultObject:
    """One object a job produces, and the one way it becomes a file."""

    #: what it is; a secondary capture is one object per image of its series
    kind: ResultKind
    dataset: Dataset

    @functools.cached_property
    def encoded(self) -> bytes | None:
        """The Part 10 bytes, encoded on first use and kept; None for a large object, which is
        only ever streamed."""
        return None if is_large(self.dataset) else part10_bytes(self.dataset)

    def write(self, path: Path, *, durable: bool = False) -> None:
        """Write the object to ``path``; with ``durable``, on the disk before this returns
        (``fsync``), for a copy that must outlive a crash of the machine."""
        with open(path, "wb") as out:
            if self.encoded is not None:
                out.write(self.encoded)
            else:
                pydicom.dcmwrite(out, self.dataset, enforce_file_format=True)
            if durable:
                out.flush()
                os.fsync(out.fileno())
