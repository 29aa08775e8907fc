"""Rule conditions run in bounded time and memory: RE2 regexes, an allow-list, caps."""

from __future__ import annotations

import pytest

from node.rules import InvalidConditionError, Rule, compile_condition, explain
from node.rules.condition import holds
from node.rules.files import RulesFileError, load_rules
from node.rules.limits import MAX_CONDITION_CHARS, MAX_NESTING, MAX_VALUE_CHARS, MAX_VALUE_ITEMS


def _holds(condition: str, values: dict[str, object]) -> bool:
    return holds(compile_condition(condition), values)


# ---- regular expressions are RE2 ------------------------------------------------------------


def test_a_catastrophic_pattern_on_a_hostile_value_is_answered():
    # Python's re backtracks 2^n times here: with n = 30 it stalled Orthanc for minutes.
    hostile = "a" * (MAX_VALUE_CHARS - 1) + "!"
    assert not _holds('SeriesDescription =~ "(a+)+$"', {"SeriesDescription": hostile})


def test_a_catastrophic_pattern_on_a_literal_is_reduced_with_re2_at_validation():
    # rule-engine evaluates literal-only sub-expressions while parsing, i.e. at validation
    literal = "a" * 60 + "!"
    assert not _holds(f'"{literal}" =~ "(a+)+$" or Modality == "CT"', {})


def test_re2_keeps_the_meaning_of_match_search_and_groups():
    values = {"SeriesDescription": "T1 MPRAGE sag", "ProtocolName": "t1"}
    assert _holds('SeriesDescription =~ "(?i)t1"', values)
    assert not _holds('SeriesDescription =~ "MPRAGE"', values)  # =~ matches from the start
    assert _holds('SeriesDescription =~~ "MPRAGE"', values)  # =~~ searches
    assert _holds('SeriesDescription !~ "MPRAGE"', values)
    assert _holds('SeriesDescription =~ "T\\\\d \\\\w+"', values)


def test_a_backreference_is_refused_naming_the_pattern():
    with pytest.raises(
        InvalidConditionError,
        match=r"invalid regular expression '\(a\)\\\\1': invalid escape sequence: \\1 \(conditions use RE2",
    ):
        compile_condition('SeriesDescription =~ "(a)\\\\1"')


def test_lookaround_is_refused():
    with pytest.raises(InvalidConditionError, match=r"invalid regular expression '\(\?=t1\)'"):
        compile_condition('SeriesDescription =~~ "(?=t1)"')


def test_a_pattern_that_is_not_a_literal_is_refused():
    with pytest.raises(
        InvalidConditionError,
        match=r"the pattern on the right of =~ must be a string literal .*line 1, column 19",
    ):
        compile_condition("SeriesDescription =~ ProtocolName")


# ---- the allow-list -------------------------------------------------------------------------


def test_range_is_refused_at_validation():
    with pytest.raises(
        InvalidConditionError,
        match=r"\$range is not allowed in a condition: only the built-ins \$abs, \$all, \$any, \$max, "
        r"\$min, \$sum are .* \(line 1, column 6\)",
    ) as caught:
        compile_condition("7 in $range(1e10)")
    assert (caught.value.line, caught.value.column) == (1, 6)


def test_split_is_refused():
    with pytest.raises(InvalidConditionError, match=r"\$split is not allowed"):
        compile_condition('"T1" in $split(SeriesDescription)')


def test_a_shift_is_refused_before_rule_engine_computes_it():
    # rule-engine would compute 1 << 1e9 (125 MB) while parsing
    with pytest.raises(InvalidConditionError, match="the operator << is not allowed in a condition"):
        compile_condition("1 << 1e9 > 0")


def test_bitwise_operators_are_refused():
    with pytest.raises(InvalidConditionError, match=r"the operator & is not allowed .*column 35"):
        compile_condition("SeriesNumber > 1 and SeriesNumber & 1 == 1")


def test_floor_is_refused_with_its_position():
    with pytest.raises(InvalidConditionError, match=r"\.floor is not allowed .*\(line 2, column 16\)"):
        compile_condition('Modality == "CT" and\nSliceThickness.floor == 1')


def test_a_nested_comprehension_is_refused():
    with pytest.raises(InvalidConditionError, match="a comprehension inside a comprehension is not allowed"):
        compile_condition("[[y for y in ImageType] for x in ImageType].length > 0")


def test_a_mapping_literal_is_refused():
    with pytest.raises(InvalidConditionError, match=r"a mapping literal \{...\} is not allowed"):
        compile_condition('{"a": 1}["a"] == 1')


def test_what_is_allowed_still_works():
    values = {"ImageType": ("ORIGINAL", "PRIMARY", "AXIAL"), "PixelSpacing": (0.5, 0.7)}
    assert _holds('[t for t in ImageType if t =~ "PRI"].length == 1', values)
    assert _holds("$max(PixelSpacing) < 1 and $abs(-PixelSpacing[0]) == 0.5", values)
    assert _holds('ImageType[0].as_lower.starts_with("orig")', values)
    assert _holds("(SliceThickness ?? 2) ** 2 == 4", values)


def test_rule_import_refuses_what_conditions_may_not_use():
    text = "version: 1\nrules:\n  - {name: r, condition: 7 in $range(1e10), pipelines: [p]}\n"
    with pytest.raises(RulesFileError, match=r"rule 1 \('r'\), field 'condition': .*\$range is not allowed"):
        load_rules(text)


def test_a_required_series_condition_is_bounded_too():
    with pytest.raises(ValueError, match=r"required series 'T1' is invalid: the operator << is not allowed"):
        Rule(
            name="r",
            condition="true",
            pipelines=["p"],
            requires={"series": [{"name": "T1", "condition": "1 << 1e9 > 0"}]},
        )


# ---- caps -----------------------------------------------------------------------------------


def test_a_long_condition_is_refused():
    condition = 'Modality == "CT"' + ' or Modality == "MR"' * 100
    with pytest.raises(
        InvalidConditionError,
        match=rf"the condition is {len(condition)} characters long; at most {MAX_CONDITION_CHARS} are",
    ):
        compile_condition(condition)


def test_deep_nesting_is_refused_rather_than_overflowing_the_stack():
    with pytest.raises(InvalidConditionError, match=f"nests operators more than {MAX_NESTING} deep"):
        compile_condition("not " * (MAX_NESTING + 1) + "true")


def test_a_long_text_value_is_truncated():
    values = {"SeriesDescription": "x" * (MAX_VALUE_CHARS * 5)}
    assert _holds(f"SeriesDescription.length == {MAX_VALUE_CHARS}", values)


def test_a_long_list_value_is_truncated():
    values = {"ImageType": tuple(f"V{n}" for n in range(MAX_VALUE_ITEMS * 2))}
    assert _holds(f"ImageType.length == {MAX_VALUE_ITEMS}", values)
    assert not _holds(f'"V{MAX_VALUE_ITEMS}" in ImageType', values)


def test_the_tester_shows_the_truncated_value_the_condition_saw():
    [clause] = explain('SeriesDescription == "x"', {"SeriesDescription": "y" * (MAX_VALUE_CHARS + 10)})
    assert clause.values == {"SeriesDescription": "y" * MAX_VALUE_CHARS}
