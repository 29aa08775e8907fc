"""Validating the node's SRs with PixelMed's SR validator, an independent check of TID 1500.

Debian's ``pixelmed-apps`` installs the jar; ``com.pixelmed.validate.DicomSRValidator`` checks
the SR IOD and walks the content tree against its compiled templates and context groups. It
prints ``Error: ...`` and ``Warning: ...`` lines and exits 0 either way. On JDK 17 its XSLT
exceeds the JAXP XPath operator limits, so those limits are lifted here (Debian's
``/usr/bin/DicomSRValidator`` wrapper does not, and fails with JAXP0801003).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
_JAXP_UNLIMITED = (
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
)


@dataclass(frozen=True)
class PixelmedReport:
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    output: str


def pixelmed_available() -> bool:
    return PIXELMED_JAR.is_file() and shutil.which("java") is not None


def validate_sr(path: Path) -> PixelmedReport:
    completed = subprocess.run(
        [
            "java",
            *_JAXP_UNLIMITED,
            "-cp",
            str(PIXELMED_JAR),
            "com.pixelmed.validate.DicomSRValidator",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = completed.stdout + completed.stderr
    lines = [line.strip() for line in output.splitlines()]
    errors = tuple(line for line in lines if line.startswith("Error:"))
    warnings = tuple(line for line in lines if line.startswith("Warning:"))
    if completed.returncode != 0 or "IOD validation complete" not in output:
        errors += (f"Error: DicomSRValidator did not finish (exit status {completed.returncode})",)
    return PixelmedReport(errors=errors, warnings=warnings, output=output)
