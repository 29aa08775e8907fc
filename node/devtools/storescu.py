"""Sending a folder of DICOM files with DCMTK's storescu, as a modality would."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from node.errors import ConfigurationError, DeliveryError


def send_folder(
    folder: Path, *, host: str, port: int, called_aet: str, calling_aet: str = "AINODE-DEMO"
) -> None:
    """C-STORE every file under ``folder`` to ``called_aet`` at host:port."""
    executable = shutil.which("storescu")
    if executable is None:
        raise ConfigurationError("storescu not found: install the Debian package dcmtk (`make setup` does)")
    env = dict(os.environ, TCP_NODELAY="1")  # DCMTK waits on Nagle's algorithm without it
    command = [executable, "-aet", calling_aet, "-aec", called_aet, "+sd", "+r", host, str(port), str(folder)]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if completed.returncode != 0:
        raise DeliveryError(
            f"storescu could not send {folder} to {called_aet}@{host}:{port}: "
            f"{(completed.stderr or completed.stdout).strip()[-500:]}"
        )
