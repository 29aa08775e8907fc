"""Following Orthanc's change log, durably.

Orthanc numbers every change (``GET /changes``). The follower reads the log in order and hands
each study that became stable to a callback; the cursor it stores in the job database never
passes a study it has not handed on yet. So a node that was stopped, or an Orthanc restarted
before a study's StableStudy event fired (Orthanc keeps stability timers in memory only),
still gets every study once it runs again: the follower replays from the cursor, and a study
whose NewStudy it saw without a StableStudy is handed on when Orthanc says it is stable and
its last update is older than the stable age.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from node.db.jobs import JobTrigger
from node.errors import OrthancError
from node.support.failpoints import failpoint

log = logging.getLogger(__name__)

CURSOR_KEY = "orthanc.last_change_seq"
BATCH = 500


class StateStore(Protocol):
    def get_state(self, key: str) -> str | None: ...

    def set_state(self, key: str, value: str) -> None: ...


GetJson = Callable[[str], Any]
#: called with (Orthanc study id, trigger); raising stops the batch so the change is retried
#: (node.intake.recovery raises only when it cannot even record a study's problem)
OnStudyReady = Callable[[str, JobTrigger], object]


@dataclass(frozen=True)
class FollowerLag:
    """How far the follower is behind Orthanc's change log."""

    #: changes Orthanc logged that the follower has not read yet
    changes_behind: int
    #: how long ago Orthanc logged the oldest of them; None when there is none
    oldest_unhandled_age: timedelta | None

    def to_json(self) -> dict[str, Any]:
        age = self.oldest_unhandled_age
        return {
            "changes_behind": self.changes_behind,
            "oldest_unhandled_age_seconds": None if age is None else round(age.total_seconds(), 1),
        }


class ChangeFollower:
    def __init__(
        self,
        get_json: GetJson,
        on_study_ready: OnStudyReady,
        state: StateStore,
        *,
        stable_age: timedelta,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._get_json = get_json
        self._on_study_ready = on_study_ready
        self._state = state
        self._stable_age = stable_age
        self._now = now
        stored = state.get_state(CURSOR_KEY)
        self.cursor = int(stored) if stored else 0
        #: studies seen as NewStudy without a StableStudy yet: Orthanc id -> seq of NewStudy
        self.pending: dict[str, int] = {}
        # Studies that were new before this follower started may never get a StableStudy
        # event (Orthanc's stability timers died with the previous process): check those.
        self._replay_horizon = int(get_json("/changes?last")["Last"])

    def poll(self) -> int:
        """Handle the next batch of changes; return how many were read."""
        failpoint("follow")
        batch = self._get_json(f"/changes?since={self.cursor}&limit={BATCH}")
        changes = batch.get("Changes", [])
        for change in changes:
            self._handle(change)
            self.cursor = int(change["Seq"])
            self._save_cursor()
        self._hand_on_stale_pending()
        return len(changes)

    def lag(self) -> FollowerLag:
        """How far behind the follower is now (two small requests to Orthanc)."""
        return follower_lag(self._get_json, self.cursor, self._now())

    def _handle(self, change: dict[str, Any]) -> None:
        kind, resource = change["ChangeType"], change["ID"]
        if kind == "NewStudy":
            self.pending.setdefault(resource, int(change["Seq"]))
        elif kind == "StableStudy":
            self._on_study_ready(resource, JobTrigger.STABLE_STUDY)
            self.pending.pop(resource, None)
        elif kind == "Deleted" and change.get("ResourceType") == "Study":
            self.pending.pop(resource, None)

    def _save_cursor(self) -> None:
        # Never store a cursor past a study that is still waiting: a restart replays from it.
        safe = min([self.cursor, *(seq - 1 for seq in self.pending.values())])
        self._state.set_state(CURSOR_KEY, str(safe))

    def _hand_on_stale_pending(self) -> None:
        for study_id, seq in list(self.pending.items()):
            if seq > self._replay_horizon:
                continue  # Orthanc is timing this one and will send StableStudy
            try:
                study = self._get_json(f"/studies/{study_id}")
            except OrthancError:
                log.info("study %s no longer in Orthanc; forgetting it", study_id, extra={"action": "follow"})
                self.pending.pop(study_id)
                self._save_cursor()
                continue
            if not study.get("IsStable", True) or not self._old_enough(study.get("LastUpdate")):
                continue
            log.info(
                "study %s became stable while the node was down; routing it now",
                study_id,
                extra={"action": "replay"},
            )
            self._on_study_ready(study_id, JobTrigger.REPLAY)
            self.pending.pop(study_id)
            self._save_cursor()

    def _old_enough(self, last_update: str | None) -> bool:
        updated = _orthanc_time(last_update)
        return updated is None or self._now() - updated >= self._stable_age


def follower_lag(get_json: GetJson, cursor: int, now: datetime) -> FollowerLag:
    """How far ``cursor`` is behind Orthanc's change log: the follower's own, or on a standby
    Orthanc of a cluster the cursor the routing one stored."""
    last = int(get_json("/changes?last")["Last"])
    behind = max(0, last - cursor)
    if not behind:
        return FollowerLag(0, None)
    changes = get_json(f"/changes?since={cursor}&limit=1").get("Changes", [])
    logged = _orthanc_time(changes[0].get("Date")) if changes else None
    return FollowerLag(behind, None if logged is None else max(timedelta(0), now - logged))


def _orthanc_time(value: str | None) -> datetime | None:
    # Orthanc writes a change's Date and a study's LastUpdate as UTC ISO basic timestamps,
    # e.g. 20261128T064318.
    if not value:
        return None
    return datetime.strptime(value, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
