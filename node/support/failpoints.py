"""Named points where a fault test can hold a process, so that it can kill it right there.

The fault suite (tests/integration/test_faults.py) must kill a worker *during* its fetch, its
inference, its result building or its delivery, and Orthanc while a worker stores results; on
test data those stages take milliseconds, so no timing could hit them. Each stage passes a
named point (``failpoint("fetch")``). In a process started with ``AI_NODE_FAILPOINT_DIR=DIR``,
a test arms a point by creating ``DIR/NAME.armed``; the first process to reach it renames that
to ``DIR/NAME.reached`` (atomically: only one process wins), writes its pid into it and holds
until ``DIR/NAME.release`` exists or a minute has passed. Every other process, and every
point not armed, passes: the restarted worker finishes the job. The idea is FreeBSD's fail(9)
and the fail-rs crate, cut down to the one action the tests need.

Without the variable (always, outside the fault suite) a point costs one environment lookup.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

DIRECTORY_VARIABLE = "AI_NODE_FAILPOINT_DIR"
#: a held process goes on by itself after this long, so a test that forgot it cannot hang it
HOLD_LIMIT = 60.0


def failpoint(name: str) -> None:
    """Hold here if a fault test armed this point (see the module's description)."""
    directory = os.environ.get(DIRECTORY_VARIABLE)
    if not directory:
        return
    folder = Path(directory)
    reached = folder / f"{name}.reached"
    try:
        os.rename(folder / f"{name}.armed", reached)
    except FileNotFoundError:
        return
    reached.write_text(str(os.getpid()))
    deadline = time.monotonic() + HOLD_LIMIT
    while time.monotonic() < deadline and not (folder / f"{name}.release").exists():
        time.sleep(0.05)
