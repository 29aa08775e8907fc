"""What the benchmarks ran on, for the tables they write."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_description() -> str:
    """e.g. "2 cores, AMD EPYC 7B13"."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}"


def python_description() -> str:
    return f"Python {platform.python_version()}"
