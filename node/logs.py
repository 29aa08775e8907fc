"""Log records with context: the job, study and pipeline a line is about, as fields.

Code logs with ``extra={"job_uid": ..., "study_instance_uid": ..., "pipeline": ...}`` (see
:func:`job_context`); :class:`ContextFormatter` writes those fields after the message as
``key=value``, so a line can be found by job or study with grep, and a log shipper can parse
them. UIDs only: patient names, IDs and birth dates never go into a log line at INFO.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

#: the context fields, in the order they are written
CONTEXT_FIELDS = (
    "action",
    "job_id",
    "job_uid",
    "study_instance_uid",
    "pipeline",
    "delivery_id",
    "destination",
    "sop_instance_uid",
)


class _JobLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def uid(self) -> str: ...
    @property
    def study_instance_uid(self) -> str: ...
    @property
    def pipeline_name(self) -> str: ...


def job_context(job: _JobLike, **more: Any) -> dict[str, Any]:
    """The ``extra`` of a log call about ``job``."""
    return {
        "job_id": job.id,
        "job_uid": job.uid,
        "study_instance_uid": job.study_instance_uid,
        "pipeline": job.pipeline_name,
        **more,
    }


class ContextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = [f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if hasattr(record, name)]
        if not fields:
            return text
        # after the first line, so a traceback stays below the line it belongs to
        first, newline, rest = text.partition("\n")
        return f"{first} [{' '.join(fields)}]{newline}{rest}"
