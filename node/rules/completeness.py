"""Whether a study has the series a rule requires (a T1 and a FLAIR, say)."""

from __future__ import annotations

from dataclasses import dataclass

from node.rules.condition import holds
from node.rules.model import Rule
from node.study.attributes import StudyAttributes


@dataclass(frozen=True)
class CompletenessCheck:
    #: required series name -> keys of the series that satisfy it
    found: dict[str, tuple[str, ...]]

    @property
    def missing(self) -> list[str]:
        return [name for name, keys in self.found.items() if not keys]

    @property
    def complete(self) -> bool:
        return not self.missing

    def to_json(self) -> dict[str, object]:
        return {
            "complete": self.complete,
            "missing": self.missing,
            "found": {name: list(keys) for name, keys in self.found.items()},
        }


def check_completeness(rule: Rule, study: StudyAttributes) -> CompletenessCheck | None:
    """None when the rule requires nothing beyond a stable study."""
    if rule.requires is None:
        return None
    return CompletenessCheck(
        found={
            required.name: tuple(
                series.key for series in study.series if holds(required.compiled, study.series_values(series))
            )
            for required in rule.requires.series
        }
    )
