"""Compiling and evaluating rule conditions with the rule-engine expression language.

Conditions are parsed by rule-engine (a typed expression language; nothing is ever passed to
Python's ``eval``) against a typed namespace: every name must be a DICOM keyword (see
:mod:`node.study.attributes`), so a misspelt keyword or a comparison of a string with a number
is refused when the rule is saved, not when a study arrives.

Missing attributes are null. ``BodyPartExamined == null`` is true for a series without one, and
any clause that needs a value a missing attribute does not have (``SliceThickness <= 3.0``,
``"PRIMARY" in ImageType``, ``SeriesDescription =~ "..."`` on null) is simply false: the
top-level ``and``/``or`` structure is evaluated clause by clause, so one missing attribute never
makes a whole rule raise, and the tester can say which clause failed on which value.

What a condition may use, and the caps on its length and on the values it sees, are in
:mod:`node.rules.limits`: a condition runs in Orthanc's process, on values senders choose.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import rule_engine
import rule_engine.errors
from rule_engine import DataType

from node.errors import InvalidRuleError
from node.rules.limits import DECIMAL_CONTEXT, BoundedRule, ConditionLimitError, bounded_values
from node.study.attributes import (
    Attributes,
    similar_keywords,
    value_kind,
)


class InvalidConditionError(InvalidRuleError):
    """A condition does not compile. ``line`` and ``column`` (1-based) locate the problem when
    the parser knows where it is; both are None for a problem at the end of the text."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


# --------------------------------------------------------------------------------------------
# Compiling
# --------------------------------------------------------------------------------------------


def _attribute_type(name: str) -> Any:
    kind = value_kind(name)
    if kind is None:
        suggestions = similar_keywords(name)
        raise rule_engine.errors.SymbolResolutionError(
            name, suggestion=suggestions[0] if suggestions else None
        )
    scalar = DataType.FLOAT if kind.numeric else DataType.STRING
    return DataType.ARRAY(scalar) if kind.multiple else scalar


def _context() -> rule_engine.Context:
    # A fresh context per compiled condition: rule-engine records the names a condition uses
    # in ``context.symbols``, which explain() reads. ``default_value=None`` makes a missing
    # attribute null instead of an error; non-nullable types keep ``SliceThickness <= 3.0``
    # writable without ``??`` (null is checked at evaluation, see module doc).
    return rule_engine.Context(
        default_value=None,
        type_resolver=_attribute_type,
        mapping_attribute_lookup=False,
        decimal_context=DECIMAL_CONTEXT,
    )


def compile_condition(text: str) -> rule_engine.Rule:
    """Compile a condition, or raise :class:`InvalidConditionError` with the parser's message
    and the line and column of the problem."""
    if not text.strip():
        raise InvalidConditionError("the condition is empty")
    try:
        compiled = BoundedRule(text, context=_context())
    except ConditionLimitError as error:
        found = _find_token(text, error.token)
        where = f" (line {found[0]}, column {found[1]})" if found else ""
        raise InvalidConditionError(
            f"{error.message}{where}",
            line=found[0] if found else None,
            column=found[1] if found else None,
        ) from error
    except rule_engine.errors.RuleSyntaxError as error:
        token = error.token
        # rule-engine appends " at: line L:OFFSET" (or " at: EOF"); the position is given below
        message = str(error.message).split(" at: ")[0]
        if token is None:
            raise InvalidConditionError(
                f"{message} at the end of the condition (is something missing?)"
            ) from error
        line, column = _line_column(text, token.lexpos)
        raise InvalidConditionError(
            f"{message} at line {line}, column {column} (near {str(token.value)!r}):\n"
            f"{_pointer(text, line, column)}",
            line=line,
            column=column,
        ) from error
    except rule_engine.errors.SymbolResolutionError as error:
        name = error.symbol_name
        hint = f"; did you mean {error.suggestion!r}?" if error.suggestion else ""
        found = _find_word(text, name)
        where = f" at line {found[0]}, column {found[1]}" if found else ""
        raise InvalidConditionError(
            f"unknown attribute {name!r}{where}: conditions name DICOM attributes by their "
            f"keyword (PS3.6), and sequences and binary attributes cannot be used{hint}",
            line=found[0] if found else None,
            column=found[1] if found else None,
        ) from error
    except rule_engine.errors.EvaluationError as error:
        raise InvalidConditionError(
            f"{error.message}: an operator is given values of types it cannot take "
            "(e.g. a text attribute compared with a number, Modality > 3)"
        ) from error
    except rule_engine.errors.EngineError as error:
        raise InvalidConditionError(str(error.message)) from error
    result_type = compiled.statement.expression.result_type
    if result_type not in (DataType.BOOLEAN, DataType.UNDEFINED):
        raise InvalidConditionError(
            f"the condition gives a {result_type.name} value, not true or false "
            '(compare it with something, e.g. Modality == "CT")'
        )
    return compiled


def _line_column(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def _pointer(text: str, line: int, column: int) -> str:
    source = text.splitlines()[line - 1] if text.splitlines() else text
    return f"  {source}\n  {' ' * (column - 1)}^"


def _find_token(text: str, token: tuple[str, str] | None) -> tuple[int, int] | None:
    """Line and column of the first token of this (type, text) in ``text``, if any."""
    if token is None:
        return None
    for kind, offset, length in _tokens(text):
        if (kind, text[offset : offset + length]) == token:
            return _line_column(text, offset)
    return None


def _find_word(text: str, word: str) -> tuple[int, int] | None:
    found = re.search(rf"(?<![\w.]){re.escape(word)}(?!\w)", text)
    if found is None:
        return None
    return _line_column(text, found.start())


# --------------------------------------------------------------------------------------------
# Evaluating
# --------------------------------------------------------------------------------------------

_NULL_FAILURES = (rule_engine.errors.EvaluationError, TypeError)


def holds(compiled: rule_engine.Rule, values: Attributes) -> bool:
    """Whether a compiled condition is true for ``values`` (cut to what a condition sees, see
    :func:`~node.rules.limits.bounded_values`); see the module doc for nulls."""
    # what Rule.evaluate does before each evaluation
    compiled.context._tls.reset()
    with decimal.localcontext(compiled.context.decimal_context):
        return _holds(compiled.statement.expression, bounded_values(values))


def _holds(node: Any, values: dict[str, Any]) -> bool:
    if isinstance(node, rule_engine.ast.LogicExpression):
        if node.type == "and":
            return _holds(node.left, values) and _holds(node.right, values)
        if node.type == "or":
            return _holds(node.left, values) or _holds(node.right, values)
    try:
        return bool(node.evaluate(values))
    except _NULL_FAILURES:
        return False


@dataclass(frozen=True)
class ClauseResult:
    """One top-level clause of a condition, whether it held, and the attributes it names with
    the values they had (None: missing)."""

    text: str
    passed: bool
    values: Mapping[str, Any]

    def describe(self) -> str:
        """E.g. ``SliceThickness <= 3.0 is false: SliceThickness is 5.0``."""
        shown = ", ".join(
            f"{name} is missing" if value is None else f"{name} is {_show(value)}"
            for name, value in self.values.items()
        )
        verdict = "true" if self.passed else "false"
        return f"{self.text} is {verdict}" + (f": {shown}" if shown else "")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    return repr(value)


def explain(condition: str, values: Attributes) -> list[ClauseResult]:
    """Each top-level clause of ``condition`` evaluated on ``values``.

    ``A and B and (C or D)`` has the clauses ``A``, ``B`` and ``(C or D)``; a condition whose
    top level is ``or`` is split at its ``or``\\ s; anything else is one clause.
    """
    results = []
    values = bounded_values(values)
    for text in split_clauses(condition):
        compiled = compile_condition(text)
        names = sorted(name for name in compiled.context.symbols if value_kind(name) is not None)
        results.append(
            ClauseResult(
                text=text,
                passed=holds(compiled, values),
                values={name: values.get(name) for name in names},
            )
        )
    return results


_OPENING = {"LPAREN", "LBRACKET", "LBRACE"}
_CLOSING = {"RPAREN", "RBRACKET", "RBRACE"}


def split_clauses(condition: str) -> list[str]:
    """The source text of each top-level clause: split at ``or`` outside brackets if there is
    one (``or`` binds loosest), else at ``and``; a condition with a top-level ``? :`` is one
    clause. Outer parentheses around the whole condition are looked through."""
    text = condition.strip()
    tokens = _tokens(text)
    while tokens and _wraps(tokens):
        text = text[tokens[0][1] + 1 : tokens[-1][1]].strip()
        tokens = _tokens(text)
    depth = 0
    top: dict[str, list[int]] = {"OR": [], "AND": [], "QMARK": []}
    for kind, offset, length in tokens:
        if kind in _OPENING:
            depth += 1
        elif kind in _CLOSING:
            depth -= 1
        elif depth == 0 and kind in top:
            top[kind].append(offset)
            top[kind].append(offset + length)
    if top["QMARK"]:
        return [text]
    cuts = top["OR"] or top["AND"]
    if not cuts:
        return [text]
    bounds = [0, *cuts, len(text)]
    return [text[bounds[i] : bounds[i + 1]].strip() for i in range(0, len(bounds), 2)]


def _tokens(text: str) -> list[tuple[str, int, int]]:
    # rule-engine's own lexer, so strings and regexes containing "and" or brackets are skipped
    # exactly as the parser skips them.
    lexer = rule_engine.Rule.parser._lexer.clone()
    lexer.input(text)
    return [(token.type, token.lexpos, len(str(token.value))) for token in iter(lexer.token, None)]


def _wraps(tokens: Sequence[tuple[str, int, int]]) -> bool:
    """Whether the first token's bracket is a parenthesis closed by the last token."""
    if tokens[0][0] != "LPAREN" or tokens[-1][0] != "RPAREN":
        return False
    depth = 0
    for index, (kind, _, _) in enumerate(tokens):
        if kind in _OPENING:
            depth += 1
        elif kind in _CLOSING:
            depth -= 1
            if depth == 0:
                return index == len(tokens) - 1
    return False
