"""One exception family for the node.

Each subclass is a kind of failure a PACS admin must tell apart; the message is always a
complete sentence that can be shown as a job's error without a stack trace.
"""


class NodeError(Exception):
    """Base class of every error the node raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(NodeError):
    """The node's configuration is invalid or incomplete."""


class InputStudyError(NodeError):
    """A study cannot be routed as it is (e.g. a Study Instance UID DICOM does not allow)."""


class InputSeriesError(NodeError):
    """A series cannot be turned into a volume (geometry, missing slices, unsupported data)."""


class NoMatchingSeriesError(InputSeriesError):
    """No series of the study meets a pipeline's criteria."""


class PipelineError(NodeError):
    """A pipeline raised, returned something invalid, or could not be loaded."""


class ResultValidationError(NodeError):
    """A result object the node built failed DICOM validation."""


class InvalidRuleError(NodeError):
    """A routing rule, its condition or a rules file is invalid; the message says where and why."""


class DeliveryError(NodeError):
    """A result could not be stored in Orthanc or sent to a destination."""


class OrthancError(NodeError):
    """Orthanc could not be started or answered a request with an error. ``not_found``: it
    answered that the resource does not exist (deleted, or never there), which trying again
    will not change; any other error may be transient (Orthanc restarting, busy)."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found
