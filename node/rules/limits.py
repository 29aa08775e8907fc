"""What a rule condition may use, so that evaluating one takes bounded time and memory.

Conditions run inside Orthanc's process, on tag values any C-STORE sender chooses, so a
condition must never stall the process or exhaust its memory. rule-engine alone allows both:
its regular expressions are Python's ``re`` (backtracking: ``SeriesDescription =~ "(a+)+$"``
on 30 ``a``\\ s and a ``!`` takes minutes, holding the GIL) and its built-ins allocate without
limit (``7 in $range(1e10)``). So:

- **Regular expressions are RE2** (google-re2): matching takes time linear in the value. A
  pattern RE2 cannot compile (backreferences, lookaround) is refused when the rule is saved,
  and a pattern must be a string literal, so every pattern is checked then.
- **An allow-list of what a condition may use**: DICOM keywords, string, number, boolean,
  null, array and set literals, the comparison, logic, arithmetic, ``in``, ``??``, ``? :``,
  indexing and slicing operators, comprehensions (not nested), the built-ins of
  :data:`BUILTINS` and the attributes of :data:`ATTRIBUTES`. Everything else is refused with
  what is not allowed and why: bitwise operators work on integers of unbounded size
  (``1 << 1e9``), ``.floor`` and ``.ceiling`` turn ``1e999999`` into an integer of a million
  digits, ``$range`` and ``$split`` build lists, a nested comprehension multiplies sizes.
- **Caps**: a condition has at most :data:`MAX_CONDITION_CHARS` characters and nests at most
  :data:`MAX_NESTING` operators deep (deeper ones would exhaust Python's stack); a condition
  sees at most :data:`MAX_VALUE_CHARS` characters of a text value and :data:`MAX_VALUE_ITEMS`
  values of a multi-valued attribute. Values are truncated, not refused: they come from
  senders, and a rule must still decide on the rest.
- **Fixed decimal arithmetic**: rule-engine computes with :mod:`decimal`; conditions compute
  with 28 significant digits whatever the thread's decimal context says.

rule-engine has no hook for any of this, so :class:`BoundedRule` parses with a
:class:`~rule_engine.parser.Parser` subclass that checks the tree between rule-engine's two
parsing phases: after the grammar has made its tree of *deferred* nodes, before they are built
(building reduces constant sub-expressions, i.e. evaluates them: ``1 << 1e9`` or
``"aaaa!" =~ "(a+)+$"`` would run at validation). It reads rule-engine internals
(``_DeferredAstNode``, the parser's ``_parser`` and ``_lexer``), which is why requirements.txt
pins rule-engine; tests/unit/test_rules_limits.py fails if they change.
"""

from __future__ import annotations

import decimal
import functools
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any, cast

import re2
import rule_engine
import rule_engine.ast as ast
import rule_engine.errors
import rule_engine.parser

#: the longest condition accepted, in characters
MAX_CONDITION_CHARS = 2000
#: how deeply operators may nest (``a or b or c`` is two deep: one level per ``or``); parsing
#: and evaluating take about two Python frames per level, so this stays well inside Python's
#: default limit of 1000
MAX_NESTING = 200
#: the characters of a text value a condition sees (longer values are truncated)
MAX_VALUE_CHARS = 1024
#: the values of a multi-valued attribute a condition sees (the first ones)
MAX_VALUE_ITEMS = 128

#: the built-ins a condition may call: each takes time linear in its argument and makes no list
BUILTINS = frozenset({"abs", "all", "any", "max", "min", "sum"})
#: the attributes a condition may use (``SeriesDescription.as_lower``): each costs what its
#: value's length does, and none makes a list from a string or an integer from a number
ATTRIBUTES = frozenset(
    {
        "as_lower",
        "as_upper",
        "ends_with",
        "is_empty",
        "is_nan",
        "length",
        "starts_with",
        "to_flt",
        "to_int",
        "to_str",
    }
)

#: rule-engine computes FLOAT values as decimals: a fixed precision bounds the cost of each
#: operation (``**`` included), and overflow is an error (the clause is false), not a huge number
DECIMAL_CONTEXT = decimal.Context(
    prec=28,
    Emax=999_999,
    Emin=-999_999,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is reported to the user, not on stderr

_HOW_TO = "(a condition may use DICOM keywords, literals, comparisons, and, or, not, in, arithmetic and =~)"


class ConditionLimitError(rule_engine.errors.EngineError):
    """A condition uses something conditions may not, or is too big. ``token`` is the
    ``(type, text)`` of the rule-engine token to point at, when there is one."""

    def __init__(self, message: str, *, token: tuple[str, str] | None = None) -> None:
        super().__init__(message)
        self.token = token


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


class _BoundedParser(rule_engine.parser.Parser):
    """rule-engine's parser, checking the deferred tree before it is built (see module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def parse(self, text: str, context: rule_engine.Context, **kwargs: Any) -> ast.Statement:
        # ParserBase.parse, with check_tree between its two phases
        with self._lock:
            self.context = context
            try:
                tree = self._parser.parse(text, lexer=self._lexer)
            finally:
                self.context = None
        check_tree(tree)
        with decimal.localcontext(DECIMAL_CONTEXT):
            return cast(ast.Statement, tree.build())


@functools.cache
def _parser() -> _BoundedParser:
    # built on first use: ply builds the grammar's tables, a third of a second
    return _BoundedParser()


class BoundedRule(rule_engine.Rule):
    """A rule-engine rule parsed within the limits of this module; refused with
    :class:`ConditionLimitError` (or rule-engine's own errors) otherwise."""

    def __init__(self, text: str, context: rule_engine.Context) -> None:
        if len(text) > MAX_CONDITION_CHARS:
            raise ConditionLimitError(
                f"the condition is {len(text)} characters long; at most {MAX_CONDITION_CHARS} are allowed"
            )
        # an instance attribute, as rule-engine's own DebugRule sets its parser
        self.parser = _parser()
        super().__init__(text, context=context)


def check_tree(root: Any) -> None:
    """Refuse what :data:`_ALLOWED` does not allow in a tree of rule-engine's deferred nodes,
    and make every regular expression comparison an RE2 one. Iterative: the tree may be
    deeper than Python's stack (that is one of the things refused)."""
    pending: list[tuple[Any, int, bool]] = [(root, 0, False)]
    while pending:
        node, depth, in_comprehension = pending.pop()
        if depth > MAX_NESTING:
            raise ConditionLimitError(
                f"the condition nests operators more than {MAX_NESTING} deep; "
                "list alternatives with in [...] instead of a long chain of or"
            )
        kind = node.cls
        if kind not in _ALLOWED:
            raise _not_allowed(node)
        if kind is ast.SymbolExpression:
            _check_symbol(node)
        elif kind is ast.GetAttributeExpression:
            _check_attribute(node)
        elif kind is ast.FuzzyComparisonExpression:
            _check_pattern(node)
            node.cls = LinearRegexComparison
        elif kind is ast.ComprehensionExpression:
            if in_comprehension:
                raise ConditionLimitError(
                    "a comprehension inside a comprehension is not allowed in a condition: "
                    "the sizes of their arrays would multiply",
                    token=("FOR", "for"),
                )
            in_comprehension = True
        pending.extend((child, depth + 1, in_comprehension) for child in _children(node))


def _children(node: Any) -> list[Any]:
    found = []
    values: deque[Any] = deque([*node.args, *node.kwargs.values()])
    while values:
        value = values.popleft()
        if isinstance(value, rule_engine.parser._DeferredAstNode):
            found.append(value)
        elif isinstance(value, tuple | list | deque):  # arrays, sets, call arguments, mappings
            values.extend(value)
    return found


_ALLOWED = frozenset(
    {
        ast.Statement,
        ast.LogicExpression,
        ast.UnaryExpression,
        ast.ComparisonExpression,
        ast.ArithmeticComparisonExpression,
        ast.FuzzyComparisonExpression,
        ast.ContainsExpression,
        ast.TernaryExpression,
        ast.CoalesceExpression,
        ast.AddExpression,
        ast.SubtractExpression,
        ast.ArithmeticExpression,
        ast.GetItemExpression,
        ast.GetSliceExpression,
        ast.GetAttributeExpression,
        ast.FunctionCallExpression,
        ast.ComprehensionExpression,
        ast.SymbolExpression,
        ast.BooleanExpression,
        ast.FloatExpression,
        ast.StringExpression,
        ast.NullExpression,
        ast.ArrayExpression,
        ast.SetExpression,
    }
)

_OPERATORS = {name: text for text, name in rule_engine.parser.Parser.op_names.items()}

#: the bitwise operators, and why they are refused
_BITWISE = {
    ast.BitwiseExpression: "bitwise operators work on integers of unbounded size",
    ast.BitwiseShiftExpression: "shifting makes integers of unbounded size (1 << 1e9 has 125 MB)",
}
_DATES_ARE_TEXT = 'DICOM dates and times are text (StudyDate >= "20260101")'
#: literals refused: (what, why, the token to point at)
_LITERALS: dict[type, tuple[str, str, tuple[str, str] | None]] = {
    ast.MappingExpression: ("a mapping literal {...}", "no DICOM value is a mapping", ("LBRACE", "{")),
    ast.BytesExpression: ("a bytes literal b'...'", "no DICOM value a condition sees is bytes", None),
    ast.DatetimeExpression: ("a datetime literal d'...'", _DATES_ARE_TEXT, None),
    ast.TimedeltaExpression: ("a time span literal t'...'", _DATES_ARE_TEXT, None),
}


def _not_allowed(node: Any) -> ConditionLimitError:
    kind = node.cls
    if kind in _BITWISE:
        name = node.args[1]
        operator = _OPERATORS.get(name, name)
        return ConditionLimitError(
            f"the operator {operator} is not allowed in a condition: {_BITWISE[kind]}",
            token=(name, operator),
        )
    what, why, token = _LITERALS.get(kind, (kind.__name__, "conditions do not need it", None))
    return ConditionLimitError(f"{what} is not allowed in a condition: {why} {_HOW_TO}", token=token)


def _check_symbol(node: Any) -> None:
    name = node.args[1]
    if node.kwargs.get("scope") is not None and name not in BUILTINS:
        allowed = ", ".join(f"${builtin}" for builtin in sorted(BUILTINS))
        raise ConditionLimitError(
            f"${name} is not allowed in a condition: only the built-ins {allowed} are "
            "(the others make lists or dates, and $range(1e10) alone would fill the memory)",
            token=("SYMBOL", f"${name}"),
        )


def _check_attribute(node: Any) -> None:
    name = node.args[2]
    if name not in ATTRIBUTES:
        allowed = ", ".join(f".{attribute}" for attribute in sorted(ATTRIBUTES))
        raise ConditionLimitError(
            f".{name} is not allowed in a condition: only the attributes {allowed} are "
            "(.floor and .ceiling make integers of unbounded size, .to_ary and .to_set make a "
            "list of a text's characters)",
            token=("SYMBOL", name),
        )


def _check_pattern(node: Any) -> None:
    operator = _OPERATORS.get(node.args[1], node.args[1])
    if node.args[3].cls is not ast.StringExpression:
        raise ConditionLimitError(
            f"the pattern on the right of {operator} must be a string literal "
            f'(e.g. SeriesDescription {operator} "(?i)t1"), so it can be checked when the rule is saved',
            token=(node.args[1], operator),
        )


class LinearRegexComparison(ast.FuzzyComparisonExpression):
    """rule-engine's ``=~``, ``=~~``, ``!~`` and ``!~~`` matched by RE2 (linear time).

    rule-engine compiles the pattern with ``re`` in ``_compile_regex`` and only calls the
    compiled pattern's ``match``/``search`` (and the match's ``groups``), which RE2's Python
    module offers with the same meaning."""

    def _compile_regex(self, regex: str) -> Any:
        try:
            return re2.compile(regex, _RE2_OPTIONS)
        except re2.error as error:
            reason = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else error
            raise ConditionLimitError(
                f"invalid regular expression {regex!r}: {reason} (conditions use RE2 syntax, "
                "https://github.com/google/re2/wiki/Syntax: no backreferences or lookaround, so "
                "that matching takes time linear in the value)"
            ) from None


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


def bounded_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as a condition sees them: text cut at :data:`MAX_VALUE_CHARS` characters,
    multi-valued attributes cut at :data:`MAX_VALUE_ITEMS` values."""
    return {name: _bounded(value) for name, value in values.items()}


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_VALUE_CHARS]
    if isinstance(value, tuple):
        return tuple(_bounded(item) for item in value[:MAX_VALUE_ITEMS])
    return value
