"""A routing rule: when a study (or a series of it) meets a condition, run pipelines on it and
send the results to destinations.

A :class:`Rule` is validated when it is built: its condition is compiled (see
:mod:`node.rules.condition`), so an invalid rule is refused when it is saved or imported, with the
parser's message and the line and column of the problem.
"""

from __future__ import annotations

import enum
import functools
from typing import Annotated

import rule_engine
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from node import THIS_ORTHANC
from node.rules.condition import InvalidConditionError, compile_condition

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")]


class Priority(enum.Enum):
    """How soon a rule's jobs run: urgent jobs are claimed before routine ones."""

    ROUTINE = "routine"
    URGENT = "urgent"

    @property
    def job_priority(self) -> int:
        """The ``priority`` a job gets (the queue claims the highest first)."""
        return _JOB_PRIORITIES[self]


_JOB_PRIORITIES = {Priority.ROUTINE: 0, Priority.URGENT: 100}


class Level(enum.Enum):
    """What a condition looks at: the study as a whole, or each of its series."""

    STUDY = "study"
    SERIES = "series"


class OnTimeout(enum.Enum):
    """What happens to a study still incomplete when a rule's wait is over."""

    PROCESS = "process"
    SKIP = "skip"


class RequiredSeries(BaseModel):
    """A series a study must have before the rule runs, e.g. a T1 or a FLAIR."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: shown in the tester and the waiting list, e.g. "T1"
    name: Name
    #: a series-level condition, like a rule's
    condition: str

    @field_validator("condition")
    @classmethod
    def _compiles(cls, value: str, info: ValidationInfo) -> str:
        try:
            _compiled(value)
        except InvalidConditionError as error:
            raise ValueError(
                f"condition of required series {info.data.get('name')!r} is invalid: {error.message}"
            ) from error
        return value

    @property
    def compiled(self) -> rule_engine.Rule:
        return _compiled(self.condition)


class Completeness(BaseModel):
    """Study completeness beyond Orthanc's stable timer: the series a study must have, how long
    to wait for them after the study first became stable, and what to do then."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    series: Annotated[list[RequiredSeries], Field(min_length=1)]
    #: minutes after the study first became stable
    wait_minutes: Annotated[float, Field(gt=0, le=7 * 24 * 60)] = 30
    on_timeout: OnTimeout = OnTimeout.SKIP

    @field_validator("series")
    @classmethod
    def _unique_names(cls, value: list[RequiredSeries]) -> list[RequiredSeries]:
        names = [item.name for item in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"required series {', '.join(map(repr, repeated))} named more than once")
        return value


class Rule(BaseModel):
    """A routing rule; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    name: Name
    enabled: bool = True
    priority: Priority = Priority.ROUTINE
    level: Level = Level.SERIES
    #: a rule-engine expression over DICOM keywords, e.g. ``Modality == "CT" and SliceThickness <= 3.0``
    condition: str
    #: names of the pipelines the rule triggers (checked against the registry when saved)
    pipelines: Annotated[list[Name], Field(min_length=1)]
    #: names of the destinations the results go to
    destinations: Annotated[list[Name], Field(min_length=1)] = Field(default_factory=lambda: [THIS_ORTHANC])
    #: series the study must have before the rule runs (None: Orthanc's stable timer is enough)
    requires: Completeness | None = None

    @field_validator("condition")
    @classmethod
    def _compiles(cls, value: str, info: ValidationInfo) -> str:
        name = info.data.get("name")
        try:
            _compiled(value)
        except InvalidConditionError as error:
            rule = f"rule {name!r}" if name else "the rule"
            raise ValueError(f"condition of {rule} is invalid: {error.message}") from error
        return value

    @field_validator("pipelines", "destinations")
    @classmethod
    def _no_repeats(cls, value: list[str], info: ValidationInfo) -> list[str]:
        repeated = sorted({item for item in value if value.count(item) > 1})
        if repeated:
            raise ValueError(f"{info.field_name} lists {', '.join(map(repr, repeated))} more than once")
        return value

    @property
    def compiled(self) -> rule_engine.Rule:
        """The compiled condition (compiled once per distinct text, shared by equal rules)."""
        return _compiled(self.condition)


@functools.lru_cache(maxsize=1024)
def _compiled(condition: str) -> rule_engine.Rule:
    # rule-engine keeps per-evaluation state thread-local, so one compiled rule may be shared.
    return compile_condition(condition)
