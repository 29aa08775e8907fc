"""The change follower against a scripted change log (the real Orthanc is in tests/integration)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from node.db.jobs import JobTrigger
from node.errors import OrthancError
from node.intake.changes import CURSOR_KEY, ChangeFollower

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


class FakeOrthanc:
    def __init__(self) -> None:
        self.changes: list[dict] = []
        self.studies: dict[str, dict] = {}

    def add(self, kind: str, resource: str, level: str = "Study") -> None:
        self.changes.append(
            {"Seq": len(self.changes) + 1, "ChangeType": kind, "ID": resource, "ResourceType": level}
        )

    def get_json(self, path: str):
        if path == "/changes?last":
            return {"Last": len(self.changes)}
        if path.startswith("/changes?since="):
            since = int(path.split("since=")[1].split("&")[0])
            return {"Changes": [c for c in self.changes if c["Seq"] > since][:500]}
        if path.startswith("/studies/"):
            study = self.studies.get(path.removeprefix("/studies/"))
            if study is None:
                raise OrthancError("404")
            return study
        raise AssertionError(path)


class MemoryState:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get_state(self, key: str) -> str | None:
        return self.values.get(key)

    def set_state(self, key: str, value: str) -> None:
        self.values[key] = value


def _follower(orthanc: FakeOrthanc, state: MemoryState, ready: list) -> ChangeFollower:
    return ChangeFollower(
        orthanc.get_json,
        lambda study, trigger: ready.append((study, trigger)),
        state,
        stable_age=timedelta(seconds=10),
        now=lambda: NOW,
    )


def test_stable_study_is_handed_on_once() -> None:
    orthanc, state, ready = FakeOrthanc(), MemoryState(), []
    follower = _follower(orthanc, state, ready)
    orthanc.add("NewStudy", "s1")
    orthanc.add("StableStudy", "s1")
    follower.poll()
    follower.poll()
    assert ready == [("s1", JobTrigger.STABLE_STUDY)]
    assert state.values[CURSOR_KEY] == "2"


def test_cursor_stays_before_a_study_still_waiting_for_stability() -> None:
    orthanc, state, ready = FakeOrthanc(), MemoryState(), []
    follower = _follower(orthanc, state, ready)
    orthanc.add("NewStudy", "waiting")
    orthanc.add("NewStudy", "s2")
    orthanc.add("StableStudy", "s2")
    follower.poll()
    assert ready == [("s2", JobTrigger.STABLE_STUDY)]
    assert state.values[CURSOR_KEY] == "0"


def test_restart_replays_from_the_stored_cursor() -> None:
    orthanc, state, ready = FakeOrthanc(), MemoryState(), []
    orthanc.add("NewStudy", "s1")
    orthanc.add("StableStudy", "s1")
    _follower(orthanc, state, ready).poll()
    orthanc.add("NewStudy", "s2")
    orthanc.add("StableStudy", "s2")  # happened while the node was down
    ready.clear()
    _follower(orthanc, state, ready).poll()
    assert ready == [("s2", JobTrigger.STABLE_STUDY)]


def test_study_left_unstable_by_a_restart_is_handed_on_once_old_enough() -> None:
    orthanc, state, ready = FakeOrthanc(), MemoryState(), []
    orthanc.add("NewStudy", "lost")  # Orthanc restarted before its StableStudy fired
    orthanc.studies["lost"] = {"IsStable": True, "LastUpdate": "20261128T115955"}
    follower = _follower(orthanc, state, ready)
    follower.poll()
    assert ready == []  # updated 5 s ago: not yet
    orthanc.studies["lost"]["LastUpdate"] = "20261128T115940"
    follower.poll()
    assert ready == [("lost", JobTrigger.REPLAY)]
    assert state.values[CURSOR_KEY] == "1"


def test_study_deleted_while_waiting_is_forgotten() -> None:
    orthanc, state, ready = FakeOrthanc(), MemoryState(), []
    orthanc.add("NewStudy", "gone")
    follower = _follower(orthanc, state, ready)
    follower.poll()
    assert ready == [] and follower.pending == {}
    assert state.values[CURSOR_KEY] == "1"


def test_new_study_after_start_waits_for_orthancs_stable_event() -> None:
    orthanc, state, ready = FakeOrthanc(), MemoryState(), []
    follower = _follower(orthanc, state, ready)
    orthanc.add("NewStudy", "fresh")
    orthanc.studies["fresh"] = {"IsStable": True, "LastUpdate": "20261128T110000"}
    follower.poll()
    assert ready == []


def test_failing_hand_on_keeps_the_change_for_the_next_poll() -> None:
    orthanc, state = FakeOrthanc(), MemoryState()
    calls: list = []

    def flaky(study: str, trigger: str) -> None:
        calls.append(study)
        if len(calls) == 1:
            raise OrthancError("database is busy")

    follower = ChangeFollower(orthanc.get_json, flaky, state, stable_age=timedelta(seconds=10))
    orthanc.add("NewStudy", "s1")
    orthanc.add("StableStudy", "s1")
    with pytest.raises(OrthancError):
        follower.poll()
    assert state.values[CURSOR_KEY] == "0"
    follower.poll()
    assert calls == ["s1", "s1"]
    assert state.values[CURSOR_KEY] == "2"
