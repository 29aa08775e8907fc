"""Whether the node can keep track of a study by its UID. Orthanc stores whatever it is sent;
the job table, the results' references and every viewer need a Study Instance UID of at most
64 characters (PS3.5 9.1), so a study with another is refused by name rather than failing
deep inside a database or a DICOM writer. Other departures from PS3.5 (a leading zero in a
component) are common in the field and harmless to the node: they are not refused."""

from __future__ import annotations

MAX_UID_LENGTH = 64


def uid_problem(uid: str) -> str | None:
    """What is wrong with ``uid`` in words (to follow "its ... UID"), or None if nothing is."""
    if not uid.strip():
        return "is empty"
    if len(uid) > MAX_UID_LENGTH:
        shown = uid if len(uid) <= 80 else uid[:77] + "..."
        return f"is {len(uid)} characters long ({shown}); DICOM allows at most {MAX_UID_LENGTH}"
    return None
