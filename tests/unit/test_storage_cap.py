"""The storage cap refuses new instances at the limit; it never makes room by deleting."""

from __future__ import annotations

from typing import Any

from node.orthanc.storage_cap import StorageCap, StorageState


class Statistics:
    """Orthanc's GET /statistics, with the storage size a test sets."""

    def __init__(self, used: int) -> None:
        self.used = used

    def __call__(self, path: str) -> Any:
        assert path == "/statistics"
        return {"TotalDiskSize": str(self.used), "CountInstances": 0}


def test_instances_are_admitted_until_the_cap_then_refused() -> None:
    statistics = Statistics(used=900)
    cap = StorageCap(1000, statistics)
    cap.measure()
    assert cap.admits(60)
    # 960 counted (the reading plus what was let in since): 50 more would pass the cap
    assert not cap.admits(50)
    assert cap.admits(40)
    assert cap.state() == StorageState(used=1000, cap=1000) and cap.state().full


def test_a_new_reading_replaces_the_estimate_and_counts_the_refusals() -> None:
    statistics = Statistics(used=990)
    cap = StorageCap(1000, statistics)
    cap.measure()
    assert not cap.admits(20) and not cap.admits(30)
    statistics.used = 500  # an admin deleted studies
    assert cap.measure() == 2
    assert cap.admits(30) and cap.state().to_json() == {"used_bytes": 530, "max_bytes": 1000, "full": False}
