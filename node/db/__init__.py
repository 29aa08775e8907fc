"""The durable job table: the Orthanc plugin records jobs here, workers claim and finish them.

A process opens the database with :func:`create_engine_for`, brings the schema up to date with
:func:`migrate` (safe to run from several processes at once), then shares one
:class:`JobStore` between its threads.
"""

from node.db.database import create_engine_for, migrate
from node.db.errors import (
    DatabaseSchemaError,
    JobNotFoundError,
    JobStateError,
    LeaseLostError,
)
from node.db.jobs import Job, JobStore, JobTrigger
from node.db.models import JobStatus

__all__ = [
    "DatabaseSchemaError",
    "Job",
    "JobNotFoundError",
    "JobStateError",
    "JobStatus",
    "JobStore",
    "JobTrigger",
    "LeaseLostError",
    "create_engine_for",
    "migrate",
]
