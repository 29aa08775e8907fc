"""Fetching a package tarball from the npm registry with `npm pack` (sample data, OHIF)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from node.errors import ConfigurationError


def npm_pack(spec: str, into: Path, *, timeout_s: float, needed_for: str) -> Path:
    """Run `npm pack SPEC` in folder ``into`` and return the tarball it wrote.

    ``needed_for`` completes the sentence "... needs npm" in the error a missing npm raises.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise ConfigurationError(
            f"{needed_for} needs npm, which is not installed; install the Debian package npm "
            "(`make setup` does)."
        )
    try:
        done = subprocess.run(
            [npm, "pack", spec, "--silent"],
            cwd=into,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise ConfigurationError(
            f"npm pack {spec} did not finish within {timeout_s:g} s; check that the npm registry "
            "can be reached."
        ) from error
    packed = sorted(into.glob("*.tgz"))
    if done.returncode != 0 or not packed:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ConfigurationError(
            f"npm pack {spec} failed (exit status {done.returncode}: {detail[0]}); check that the "
            "npm registry can be reached."
        )
    return packed[0]
