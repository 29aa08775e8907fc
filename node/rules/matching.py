"""Rules on studies: which rules match a study, and on which of its series.

Conditions compile and evaluate in :mod:`node.rules.condition`; this module applies whole
:class:`~node.rules.model.Rule`\\ s, study-level or series by series, and explains each verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from node.rules.condition import ClauseResult, explain, holds
from node.rules.model import Level, Rule
from node.study.attributes import SeriesAttributes, StudyAttributes


@dataclass(frozen=True)
class Verdict:
    """A rule's condition on one subject: the study (``subject`` is ``"study"``) or one series
    (``subject`` is its key), with every top-level clause explained."""

    subject: str
    matched: bool
    clauses: tuple[ClauseResult, ...]

    @property
    def failed(self) -> tuple[ClauseResult, ...]:
        return tuple(clause for clause in self.clauses if not clause.passed)


@dataclass(frozen=True)
class RuleMatch:
    """What a rule does with a study: whether it matches, the series it selects (keys, for a
    series-level rule; empty for a study-level one) and why, subject by subject."""

    rule: Rule
    matched: bool
    series: tuple[str, ...]
    verdicts: tuple[Verdict, ...]


def match_rule(rule: Rule, study: StudyAttributes) -> RuleMatch:
    """Evaluate ``rule`` on ``study`` (at the study, or on each series for a series rule)."""
    if rule.level is Level.STUDY:
        values = study.study_values()
        matched = holds(rule.compiled, values)
        verdict = Verdict("study", matched, tuple(explain(rule.condition, values)))
        return RuleMatch(rule=rule, matched=matched, series=(), verdicts=(verdict,))
    verdicts = tuple(_series_verdict(rule, study, series) for series in study.series)
    selected = tuple(verdict.subject for verdict in verdicts if verdict.matched)
    return RuleMatch(rule=rule, matched=bool(selected), series=selected, verdicts=verdicts)


def _series_verdict(rule: Rule, study: StudyAttributes, series: SeriesAttributes) -> Verdict:
    values = study.series_values(series)
    matched = holds(rule.compiled, values)
    return Verdict(series.key, matched, tuple(explain(rule.condition, values)))


def match_rules(
    rules: Sequence[Rule], study: StudyAttributes, *, include_disabled: bool = False
) -> list[RuleMatch]:
    """Every (enabled) rule evaluated on ``study``, urgent rules first, then by name."""
    chosen = [rule for rule in rules if rule.enabled or include_disabled]
    return [match_rule(rule, study) for rule in order_rules(chosen)]


def order_rules(rules: Sequence[Rule]) -> list[Rule]:
    """Rules in the order their jobs should be queued: highest job priority first, then name."""
    return sorted(rules, key=lambda rule: (-rule.priority.job_priority, rule.name))
