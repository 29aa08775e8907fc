"""Routing rules: which studies and series run which pipelines, and where results go.

Pure code — no database, no network: :mod:`~node.rules.model` defines a :class:`Rule`,
:mod:`~node.study.attributes` turns DICOM headers or Orthanc tags into the typed values
conditions see, :mod:`~node.rules.condition` compiles, evaluates and explains conditions within the limits of
:mod:`~node.rules.limits` (what a condition may use, RE2 regexes, caps), and
:mod:`~node.rules.files` exports, imports and compares rules as YAML. The one exception,
:mod:`~node.rules.book`, checks the stored rules against the installed pipelines and the
destinations, and imports a rules file into the job database (the REST API and the CLI share it).
"""

from node.rules.condition import (
    ClauseResult,
    InvalidConditionError,
    InvalidRuleError,
    compile_condition,
    explain,
)
from node.rules.matching import RuleMatch, Verdict, match_rule, match_rules, order_rules
from node.rules.model import Level, Priority, Rule

__all__ = [
    "ClauseResult",
    "InvalidConditionError",
    "InvalidRuleError",
    "Level",
    "Priority",
    "Rule",
    "RuleMatch",
    "Verdict",
    "compile_condition",
    "explain",
    "match_rule",
    "match_rules",
    "order_rules",
]
