"""Rules as YAML: export, import with validation, and the dry-run diff."""

from __future__ import annotations

import pytest

from node.rules import InvalidRuleError, Rule
from node.rules.files import FieldChange, diff_rules, dump_rules, load_rules

CT_HEAD = 'Modality == "CT" and BodyPartExamined in ["HEAD", "BRAIN"] and SliceThickness <= 3.0'


def _rule(name: str, condition: str = CT_HEAD, **fields) -> Rule:
    return Rule(name=name, condition=condition, pipelines=fields.pop("pipelines", ["ct-tissue"]), **fields)


def test_rules_survive_a_yaml_round_trip():
    rules = [_rule("ct-head", priority="urgent"), _rule("mr", 'SeriesDescription =~ "(?i)t1"', level="study")]
    assert load_rules(dump_rules(rules)) == rules


def test_export_writes_enums_as_their_values():
    assert "priority: urgent" in dump_rules([_rule("ct-head", priority="urgent")])


def test_import_of_an_empty_rule_list_gives_no_rules():
    assert load_rules("version: 1\nrules: []\n") == []


def test_import_names_the_rule_and_field_of_an_invalid_condition():
    text = (
        "version: 1\nrules:\n  - {name: ok, condition: 'Modality == \"CT\"', pipelines: [p]}\n"
        "  - {name: broken, condition: 'Modality ==', pipelines: [p]}\n"
    )
    with pytest.raises(
        InvalidRuleError, match=r"rule 2 \('broken'\), field 'condition': condition of rule 'broken'"
    ):
        load_rules(text)


def test_import_names_an_unknown_field():
    text = "version: 1\nrules:\n  - {name: r, condition: 'Modality == \"CT\"', pipelines: [p], when: now}\n"
    with pytest.raises(InvalidRuleError, match=r"rule 1 \('r'\), field 'when' is not a rule field"):
        load_rules(text)


def test_import_names_a_missing_field():
    with pytest.raises(InvalidRuleError, match=r"rule 1 \('r'\), field 'pipelines' is missing"):
        load_rules("version: 1\nrules:\n  - {name: r, condition: 'Modality == \"CT\"'}\n")


def test_import_lists_every_problem():
    text = "version: 1\nrules:\n  - {name: a}\n  - {name: b}\n"
    with pytest.raises(InvalidRuleError, match="The rules file has 4 problems"):
        load_rules(text)


def test_import_refuses_duplicate_names():
    text = dump_rules([_rule("ct-head"), _rule("ct-head", pipelines=["other"])])
    with pytest.raises(InvalidRuleError, match=r"rule 2 \('ct-head'\) has the same name as rule 1"):
        load_rules(text)


def test_import_refuses_invalid_yaml():
    with pytest.raises(InvalidRuleError, match="The rules file is not valid YAML"):
        load_rules("rules: [\n")


def test_import_refuses_an_unknown_version():
    with pytest.raises(InvalidRuleError, match="has version 2; this node reads version 1"):
        load_rules("version: 2\nrules: []\n")


def test_import_refuses_a_bare_list():
    with pytest.raises(InvalidRuleError, match="must be a mapping with 'version' and 'rules', not list"):
        load_rules("- name: a\n")


def test_diff_lists_added_and_removed_rules():
    diff = diff_rules([_rule("old")], [_rule("new")])
    assert (diff.added, diff.removed) == (("new",), ("old",))


def test_diff_lists_each_changed_field_with_both_values():
    diff = diff_rules([_rule("ct-head")], [_rule("ct-head", priority="urgent")])
    assert diff.changed == (FieldChange(name="ct-head", field="priority", before="routine", after="urgent"),)


def test_diff_of_identical_rules_is_empty():
    assert diff_rules([_rule("ct-head")], [_rule("ct-head")]).empty
