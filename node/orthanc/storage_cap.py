"""A cap on Orthanc's storage that refuses new instances instead of deleting old ones.

Orthanc 1.10's own ``MaximumStorageSize`` recycles: to make room it deletes the oldest
patients, silently (``MaximumStorageMode: Reject`` came only in Orthanc 1.11). A PACS admin
must never lose studies that way, so the node leaves that setting at 0 and the plugin's
incoming C-STORE filter asks :class:`StorageCap` instead: at the cap, a C-STORE is refused with
"Refused: Out of Resources" and the sender keeps the study and can retry.

The filter runs inside Orthanc's storage path, where calling Orthanc's REST API could deadlock
(the plugin SDK warns of it). So the size comes from ``/statistics``, read by the plugin's own
thread every few seconds (:meth:`StorageCap.measure`), plus the instances the filter let in
since; the cap can be passed by what arrives between two readings at most.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: PS3.4 Annex B.2.3, C-STORE "Refused: Out of Resources"
STATUS_REFUSED_OUT_OF_RESOURCES = 0xA700
#: how often the plugin reads Orthanc's storage size
MEASURE_EVERY_S = 5.0


@dataclass(frozen=True)
class StorageState:
    used: int
    cap: int

    @property
    def full(self) -> bool:
        return self.used >= self.cap

    def to_json(self) -> dict[str, Any]:
        return {"used_bytes": self.used, "max_bytes": self.cap, "full": self.full}


class StorageCap:
    def __init__(self, cap: int, get_json: Callable[[str], Any]) -> None:
        self.cap = cap
        self._get_json = get_json
        self._lock = threading.Lock()
        self._measured = 0
        #: bytes let in, and instances refused, since the last measure
        self._admitted = 0
        self._refused = 0

    def measure(self) -> int:
        """Read Orthanc's storage size now (from a thread of the plugin's own, never from the
        filter); return how many instances were refused since the last reading."""
        used = int(self._get_json("/statistics")["TotalDiskSize"])
        with self._lock:
            refused = self._refused
            self._measured, self._admitted, self._refused = used, 0, 0
        return refused

    def state(self) -> StorageState:
        with self._lock:
            return StorageState(self._measured + self._admitted, self.cap)

    def admits(self, size: int) -> bool:
        """Whether an instance of ``size`` bytes fits under the cap; if it does, it is counted."""
        with self._lock:
            if self._measured + self._admitted + size > self.cap:
                self._refused += 1
                return False
            self._admitted += size
            return True
