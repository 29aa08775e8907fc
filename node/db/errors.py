"""Failures of the job database, as members of the node's exception family."""

from __future__ import annotations

from node.errors import NodeError


class JobNotFoundError(NodeError):
    """No job has the requested id."""


class JobStateError(NodeError):
    """The job is not in a state that allows the requested action (e.g. retry a running job)."""


class LeaseLostError(NodeError):
    """A worker tried to finish a job it no longer holds (its lease expired and was taken)."""


class DatabaseSchemaError(NodeError):
    """The job database's schema cannot be brought to the version this node expects."""


class DeliveryNotFoundError(NodeError):
    """No delivery has the requested id."""


class DeliveryStateError(NodeError):
    """The delivery is not in a state that allows the requested action (e.g. retry a pending one)."""


class ConfigNotFoundError(NodeError):
    """No rule or destination has the requested name."""


class QueueFullError(NodeError):
    """The queue holds ``worker.max_queued_jobs`` queued jobs: a new study must wait (in
    Orthanc, its change not yet consumed) until workers make room."""
