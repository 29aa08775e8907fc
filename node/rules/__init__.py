"""Routing rules: which studies and series run which pipelines, and where results go.

Pure code — no database, no network — except :mod:`~node.rules.book`, the stored rules checked
against the installed pipelines and the destinations (REST and CLI share it). :mod:`~node.rules.model` defines a :class:`Rule`,
:mod:`~node.rules.attributes` turns DICOM headers or Orthanc tags into the typed values
conditions see, :mod:`~node.rules.engine` compiles, evaluates and explains conditions, and
:mod:`~node.rules.files` exports, imports and compares rules as YAML.
"""

from node.rules.engine import (
    ClauseResult,
    InvalidConditionError,
    InvalidRuleError,
    RuleMatch,
    Verdict,
    compile_condition,
    explain,
    match_rule,
    match_rules,
    order_rules,
)
from node.rules.model import THIS_ORTHANC, Level, Priority, Rule

__all__ = [
    "THIS_ORTHANC",
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
